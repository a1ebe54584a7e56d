"""distill_jax: knowledge distillation at scale in JAX/Flax.

The package is organised by what a researcher chooses from a config:
``losses`` (pure kernels), ``methods`` (one file per distillation method),
``models``, ``data`` and ``schemes``, all registered by name in
``distill_jax.registry``; ``train.run(config, workdir)`` runs an experiment.
"""

__version__ = '0.1.0'
