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

from distill_jax import defaults
from distill_jax import registry
from distill_jax.schemes import born_again
from distill_jax.schemes import combiners
from distill_jax.schemes import deep_to_shallow
from distill_jax.schemes import dml
from distill_jax.schemes import multi_teacher
from distill_jax.schemes import offline
from distill_jax.schemes.base import Context
from distill_jax.schemes.teachers import build_model

# The config.scheme keys each scheme reads (besides ``name``).
SCHEME_KEYS = {
    'offline': (),
    'multi_teacher': ('teachers', 'combine', 'weights', 'combine_temperature',
                      'teacher_resolutions', 'feature_teacher'),
    'dml': ('peers',),
    'deep_to_shallow': ('exits', 'feature_weight'),
    'born_again': ('generations', 'first_generation'),
}


def get(config: ml_collections.ConfigDict):
  """The registered ``build`` of ``config.scheme.name``.

  Raises:
    ValueError: an unknown scheme, or a ``config.scheme`` key of another
      scheme set to a non-default value (it would be silently ignored).
  """
  name = config.scheme.name
  build = registry.get('schemes', name)
  default = defaults.default_config().scheme
  ignored = [key for key, value in config.scheme.items()
             if key != 'name' and key not in SCHEME_KEYS[name] and value != default[key]]
  if ignored:
    raise ValueError(
        f'config.scheme.{", config.scheme.".join(ignored)} set, but scheme {name!r} does '
        f'not use it (it reads: {", ".join(SCHEME_KEYS[name]) or "no scheme keys"}).')
  return build


__all__ = ['Context', 'SCHEME_KEYS', 'born_again', 'build_model', 'combiners',
           'deep_to_shallow', 'dml', 'get', 'multi_teacher', 'offline']
