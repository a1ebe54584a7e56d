"""Loss kernels: pure, per-example functions in optax's style.

Each kernel takes the student's and the teacher's outputs, keyword-only
hyper-parameters (``*, temperature, where=None``) and returns one value per
example (the caller reduces); the teacher is never differentiated. See
DESIGN.md rule 7 and ``distill_jax.losses.logits`` for the shared conventions
(temperature factors, masking, dtypes). Every kernel is also registered in the
``losses`` registry namespace.

Logit kernels (``logits.py``), shapes ``[..., V] -> [...]``:

* ``kl_divergence`` (``'kl'``): ``T**2 * KL(p_t || p_s)``.
* ``reverse_kl`` (``'reverse_kl'``): ``T**2 * KL(p_s || p_t)``.
* ``generalized_jsd`` (``'generalized_jsd'``): GKD's JSD(beta) divided by
  ``beta (1 - beta)``; forward KL at ``beta=0``, reverse KL at ``beta=1``.
* ``total_variation`` (``'total_variation'``): ``T * TV(p_t, p_s)``.
* ``soft_cross_entropy`` (``'soft_cross_entropy'``): ``-T**2 sum p_t log p_s``.
"""

from distill_jax.losses.logits import generalized_jsd
from distill_jax.losses.logits import kl_divergence
from distill_jax.losses.logits import reverse_kl
from distill_jax.losses.logits import soft_cross_entropy
from distill_jax.losses.logits import total_variation

__all__ = [
    'generalized_jsd',
    'kl_divergence',
    'reverse_kl',
    'soft_cross_entropy',
    'total_variation',
]
