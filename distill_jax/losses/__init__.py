"""Loss kernels: pure, per-example functions in optax's style.

Each kernel takes the student's and the teacher's outputs, keyword-only
hyper-parameters (``*, temperature, where=None``) and returns one value per
example (the caller reduces); the teacher is never differentiated. See
CONTRIBUTING.md rule 7 and ``distill_jax.losses.logits`` for the shared
conventions (temperature factors, masking, dtypes). Every kernel is also
registered in the ``losses`` registry namespace.

Logit kernels (``logits.py``), shapes ``[..., V] -> [...]``:

* ``kl_divergence`` (``'kl'``): ``T**2 * KL(p_t || p_s)``.
* ``reverse_kl`` (``'reverse_kl'``): ``T**2 * KL(p_s || p_t)``.
* ``generalized_jsd`` (``'generalized_jsd'``): GKD's JSD(beta) divided by
  ``beta (1 - beta)``; forward KL at ``beta=0``, reverse KL at ``beta=1``.
* ``total_variation`` (``'total_variation'``): ``T * TV(p_t, p_s)``.
* ``soft_cross_entropy`` (``'soft_cross_entropy'``): ``-T**2 sum p_t log p_s``.

Large-vocabulary kernels (``large_vocab.py``), from hidden states ``[..., D]``
and heads ``[D, V]`` without materializing ``[N, V]`` logits (chunked
custom_vjp, the chunk sized from the rows; vocabulary-sharded with
``vocab_sharded``; an opt-in Pallas path, ``pallas_kl.py``; the block math of
both paths in ``vocab_blocks.py``):
``fused_linear_kl``, ``fused_linear_reverse_kl``,
``fused_linear_generalized_jsd``, ``fused_linear_total_variation``,
``fused_linear_skew_kl``, ``fused_linear_cross_entropy``; logits kept
as ``LinearLogits`` (hidden, head, soft-cap) for train steps, ``on_linear_logits``.

Sparse targets (``sparse_targets.py``): ``sparse_kl_divergence``
(``'sparse_kl'``), KL against a top-k / sampled-k teacher-logit cache.

Across vocabularies (``cross_vocab.py``), rows ``[N, V_s]`` vs ``[N, V_t]``:
``uld_distance`` (``'uld'``, ULD's sorted-probability L1), ``hybrid_uld``
(``'hybrid_uld'``, GOLD: KL on shared labels + ULD on the rest), and
``span_rows`` (the merged distribution of each aligned span).

Self-attention relations of decoders (``token_relations.py``), per query
token ``[B, T]``: ``attention_kl`` (``'attention_kl'``, MiniLM) and
``self_relation_kl`` (``'self_relation_kl'``, MiniLMv2's relation heads).

Feature kernels (``features.py``), NHWC maps ``[B, H, W, C]`` -> ``[B]``:
``hint_mse``, ``attention_transfer``, ``neuron_selectivity_mmd``,
``factor_transfer``, ``fsp_distance``, ``activation_boundary``,
``variational_information`` (and ``match_spatial``, ``attention_map``,
``fsp_matrix``).

Relation kernels (``relations.py``), batch structure -> one row per example:
``similarity_preserving``, ``rkd_distance``, ``rkd_angle``,
``probabilistic_knowledge_transfer``, ``correlation_congruence``,
``inter_class_relation`` / ``intra_class_relation`` (DIST), ``nce_contrast``
(CRD).
"""

from distill_jax.losses.logits import generalized_jsd
from distill_jax.losses.logits import kl_divergence
from distill_jax.losses.logits import reverse_kl
from distill_jax.losses.logits import soft_cross_entropy
from distill_jax.losses.logits import total_variation
from distill_jax.losses.large_vocab import fused_linear_cross_entropy
from distill_jax.losses.large_vocab import fused_linear_generalized_jsd
from distill_jax.losses.large_vocab import fused_linear_skew_kl
from distill_jax.losses.large_vocab import fused_linear_total_variation
from distill_jax.losses.large_vocab import fused_linear_kl
from distill_jax.losses.large_vocab import fused_linear_reverse_kl
from distill_jax.losses.large_vocab import vocab_sharded
from distill_jax.losses.sparse_targets import sparse_kl_divergence
from distill_jax.losses.cross_vocab import hybrid_uld
from distill_jax.losses.cross_vocab import uld_distance
from distill_jax.losses.token_relations import attention_kl
from distill_jax.losses.token_relations import self_relation_kl
from distill_jax.losses.features import activation_boundary
from distill_jax.losses.features import attention_map
from distill_jax.losses.features import attention_transfer
from distill_jax.losses.features import factor_transfer
from distill_jax.losses.features import fsp_distance
from distill_jax.losses.features import fsp_matrix
from distill_jax.losses.features import hint_mse
from distill_jax.losses.features import l2_normalize
from distill_jax.losses.features import match_spatial
from distill_jax.losses.features import neuron_selectivity_mmd
from distill_jax.losses.features import variational_information
from distill_jax.losses.relations import correlation_congruence
from distill_jax.losses.relations import inter_class_relation
from distill_jax.losses.relations import intra_class_relation
from distill_jax.losses.relations import nce_contrast
from distill_jax.losses.relations import probabilistic_knowledge_transfer
from distill_jax.losses.relations import rkd_angle
from distill_jax.losses.relations import rkd_distance
from distill_jax.losses.relations import similarity_preserving

__all__ = [
    'activation_boundary',
    'attention_kl',
    'attention_map',
    'attention_transfer',
    'correlation_congruence',
    'factor_transfer',
    'fsp_distance',
    'fsp_matrix',
    'hint_mse',
    'inter_class_relation',
    'intra_class_relation',
    'l2_normalize',
    'match_spatial',
    'nce_contrast',
    'neuron_selectivity_mmd',
    'probabilistic_knowledge_transfer',
    'rkd_angle',
    'rkd_distance',
    'self_relation_kl',
    'similarity_preserving',
    'variational_information',
    'fused_linear_cross_entropy',
    'fused_linear_generalized_jsd',
    'fused_linear_skew_kl',
    'fused_linear_total_variation',
    'fused_linear_kl',
    'fused_linear_reverse_kl',
    'generalized_jsd',
    'hybrid_uld',
    'kl_divergence',
    'reverse_kl',
    'soft_cross_entropy',
    'sparse_kl_divergence',
    'total_variation',
    'uld_distance',
    'vocab_sharded',
]
