"""Tasks: what varies between image classification and language modelling.

The one loop (``distill_jax.train``) runs every config; ``config.task`` picks
the module that builds its ``base.Experiment`` (models, data, compiled steps,
evaluation, progress line):

- ``classification``: registered image data sets, vision models and the
  training schemes (``classification.py``).
- ``language_model``: a pretrained Llama-family teacher, a Llama student on
  its tokenizer, token-level methods, text / seqkd / logit-cache data
  (``language_model.py``).
"""

from distill_jax.tasks import base
from distill_jax.tasks import classification
from distill_jax.tasks import language_model

TASKS = {'classification': classification.build, 'language_model': language_model.build}


def build(config, devices=None) -> base.Experiment:
  """The ``base.Experiment`` of ``config`` (its ``config.task``)."""
  return TASKS[config.task](config, devices)


__all__ = ['TASKS', 'base', 'build', 'classification', 'language_model']
