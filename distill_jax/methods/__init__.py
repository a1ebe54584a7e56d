"""Distillation methods, one file each, registered in the ``methods`` namespace.

A method is a frozen dataclass of hyper-parameters with
``init_aux(rng, student_features, teacher_features) -> aux params`` and
``loss(student_out, teacher_out, batch, aux, step) -> (scalar, metrics)``
(see ``base.Method``). ``from_config`` builds one from ``config.method``.
"""

from distill_jax.methods import ce
from distill_jax.methods import kd
from distill_jax.methods.base import Method, from_config

__all__ = ['Method', 'from_config', 'ce', 'kd']
