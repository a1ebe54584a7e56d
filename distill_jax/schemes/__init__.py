"""Training schemes: who teaches whom, selected by ``config.scheme.name``.

- ``offline`` (default): a frozen pre-trained teacher (``offline.py``); with
  ``config.teacher.view`` and ``config.data.mixing`` it is also Beyer et al.'s
  consistent teaching / function matching.
- ``multi_teacher``: several frozen teachers, soft targets combined by a
  registered rule (``combiners.py``: weighted, confidence, log_mean).
- ``dml``: deep mutual learning, peers trained together (``dml.py``).
- ``deep_to_shallow``: "be your own teacher", auxiliary heads on intermediate
  stages learn from the deepest one (``deep_to_shallow.py``).
- ``born_again``: a chain of generations, each taught by the previous one
  (``born_again.py``; a driver over offline runs).

A scheme is ``build(context: base.Context) -> compile.Compiled`` registered in
the ``schemes`` namespace (``born_again`` registers its chain runner).
"""

import ml_collections

from distill_jax import registry
from distill_jax.schemes import born_again
from distill_jax.schemes import combiners
from distill_jax.schemes import deep_to_shallow
from distill_jax.schemes import dml
from distill_jax.schemes import multi_teacher
from distill_jax.schemes import offline
from distill_jax.schemes.base import Context
from distill_jax.schemes.teachers import build_model

def get(config: ml_collections.ConfigDict):
  """The registered ``build`` of ``config.scheme.name`` (the keys each scheme
  reads are ``defaults.SCHEME_KEYS``, checked by ``defaults.validate``).

  Raises:
    ValueError: an unknown scheme.
  """
  return registry.get('schemes', config.scheme.name)


__all__ = ['Context', 'born_again', 'build_model', 'combiners',
           'deep_to_shallow', 'dml', 'get', 'multi_teacher', 'offline']
