"""Distillation methods, one file each, registered in the ``methods`` namespace.

A method is a frozen dataclass of hyper-parameters with
``init_aux(rng, student_features, teacher_features) -> aux params`` and
``loss(student_out, teacher_out, batch, aux, step) -> (scalar, metrics)``
(see ``base.Method``). ``from_config`` builds one from ``config.method``.

Logit: ``kd``, ``dkd``, ``dist`` (and ``ce``, no teacher). Feature:
``fitnet``, ``at``, ``nst``, ``ft``, ``ab``, ``fsp``, ``vid``. Relation:
``rkd``, ``sp``, ``cc``, ``pkt``, ``crd``. The feature and relation methods
share ``common.Distiller`` (RepDistiller's ``CE + KD + weight * term``) and
``common.select`` (features by name or group); their connectors are in
``connectors``. Language models (token level, on ``token_base``):
``token_ce`` (no teacher), ``token_kl``, ``token_reverse_kl``, ``token_jsd``,
``token_tv``, ``token_skew_kl``, ``token_sparse_kl`` (no teacher: cached
sparse targets, ``data.logit_cache``); on the blocks, ``token_hidden``
(hidden states), ``token_minilm`` and ``token_minilmv2`` (self-attention
relations), paired by ``layer_maps``; and across
tokenizers ``token_uld`` and ``token_gold`` (aligned spans,
``data.token_alignment``).

Every method declares the task it serves (``Method.task``):
``'classification'`` (the default) or ``'language_model'`` (the ``token_*``
methods, through ``token_base.TokenMethod``).
"""

from distill_jax.methods import ab
from distill_jax.methods import at
from distill_jax.methods import cc
from distill_jax.methods import ce
from distill_jax.methods import crd
from distill_jax.methods import dist
from distill_jax.methods import dkd
from distill_jax.methods import fitnet
from distill_jax.methods import fsp
from distill_jax.methods import ft
from distill_jax.methods import kd
from distill_jax.methods import nst
from distill_jax.methods import pkt
from distill_jax.methods import rkd
from distill_jax.methods import sp
from distill_jax.methods import token_ce
from distill_jax.methods import token_hidden
from distill_jax.methods import token_gold
from distill_jax.methods import token_jsd
from distill_jax.methods import token_kl
from distill_jax.methods import token_minilm
from distill_jax.methods import token_minilmv2
from distill_jax.methods import token_reverse_kl
from distill_jax.methods import token_skew_kl
from distill_jax.methods import token_sparse_kl
from distill_jax.methods import token_tv
from distill_jax.methods import token_uld
from distill_jax.methods import vid
from distill_jax.methods.base import Method, MissingFeatureError, from_config

__all__ = ['Method', 'MissingFeatureError', 'from_config', 'ab', 'at', 'cc', 'ce',
           'crd', 'dist', 'dkd', 'fitnet', 'fsp', 'ft', 'kd', 'nst', 'pkt', 'rkd',
           'sp', 'token_ce', 'token_gold', 'token_hidden', 'token_jsd', 'token_kl',
           'token_minilm', 'token_minilmv2', 'token_reverse_kl', 'token_skew_kl',
           'token_sparse_kl', 'token_tv', 'token_uld', 'vid']
