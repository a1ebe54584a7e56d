"""distill_jax: knowledge distillation at scale in JAX/Flax.

The package is organised by what a researcher chooses from a config:
``losses`` (pure kernels), ``methods`` (one file per distillation method),
``models``, ``data`` and ``schemes``, all registered by name in
``distill_jax.registry``; ``train.run(config, workdir)`` runs an experiment.
"""

from distill_jax import xla_flags as _xla_flags

__version__ = '0.1.0'

# Before any JAX backend starts: the XLA:CPU defaults of ``distill_jax.xla_flags``
# (opt out with DISTILL_JAX_XLA_DEFAULTS=0).
_xla_flags.apply_defaults()
