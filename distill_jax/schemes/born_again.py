"""``born_again``: Born-Again Networks (Furlanello et al., 2018), a chain of generations.

Generation 0 is ``config.student`` trained from the labels (``ce``), or the
existing run named by ``config.scheme.first_generation``. Generation ``k``
(1..``scheme.generations``) is the same architecture distilled from
generation ``k-1`` with ``config.method`` (offline, seed ``config.seed + k``).
One command runs the whole chain in ``<workdir>/gen<k>/`` (each an ordinary
run, so a killed chain resumes where it stopped), then evaluates every
generation and the ensemble of the distilled generations (probability
average), and writes ``<workdir>/results.json``::

    {"generations": [{"generation": 0, "workdir": ..., "accuracy": ...}, ...],
     "eval": {"gen0_accuracy": ..., "ensemble_accuracy": ..., ...},
     "steps": <steps a generation>, "wall_time_s": ..., "workdir": ...}
"""

import functools
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections

from distill_jax import compile as compile_lib
from distill_jax import checkpoint
from distill_jax import defaults
from distill_jax import methods
from distill_jax import steps
from distill_jax.registry import register
from distill_jax.schemes import base
from distill_jax.schemes import teachers


@register('schemes', 'born_again')
def build(context: base.Context) -> compile_lib.Compiled:
  """A chain is several runs, not one compiled step: ``run_chain`` runs it."""
  del context
  raise ValueError('scheme born_again is a chain of runs: start it with '
                   '`python -m distill_jax.main` (train.run), which calls born_again.run_chain.')


def generation_config(config: ml_collections.ConfigDict, generation: int,
                      teacher_workdir: str) -> ml_collections.ConfigDict:
  """The offline config of one generation (``teacher_workdir`` '' = generation 0, ``ce``)."""
  gen = ml_collections.ConfigDict(config.to_dict())
  gen.scheme = defaults.default_config().scheme
  gen.seed = config.seed + generation
  gen.teacher.workdir = teacher_workdir
  if not teacher_workdir:
    gen.method = ml_collections.ConfigDict({'name': 'ce'})
  return gen


def check_chain(config: ml_collections.ConfigDict) -> None:
  """Errors a chain would hit late, raised before any training.

  Raises:
    ValueError: generations is not an int >= 1, the method uses no teacher.
    FileNotFoundError: ``first_generation`` is not a run with a checkpoint.
  """
  generations = config.scheme.generations
  if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
    raise ValueError(f'config.scheme.generations must be an integer >= 1, got {generations!r}.')
  if not methods.from_config(config.method).needs_teacher:
    raise ValueError(f'born_again distils each generation from the previous one; method '
                     f'{config.method.name!r} uses no teacher (choose kd, dkd, ...).')
  first = config.scheme.first_generation
  if first:
    teachers.saved_model_config(first)   # FileNotFoundError unless it is a run.
    if checkpoint.latest_step(first) is None:
      raise FileNotFoundError(
          f'config.scheme.first_generation={first!r} has no checkpoint: train generation 0 '
          'there first, or leave first_generation empty to train it in the chain.')


def ensemble_eval_step(variables: tuple[Any, ...], batch: steps.Batch, *, modules, mean, std,
                       first: int) -> dict[str, jax.Array]:
  """Sums ``gen<k>_...`` per generation (k from ``first``) and ``ensemble_`` over them all."""
  images = steps.eval_images(batch, mean=mean, std=std)
  return steps.ensemble_sums({f'gen{k}_': m.apply(v, images, train=False)[0]
                             for k, (m, v) in enumerate(zip(modules, variables), start=first)},
                            batch)


def run_chain(config: ml_collections.ConfigDict, workdir: str, *,
              run: Callable[..., dict[str, Any]], build: Callable[..., Any],
              evaluate_with: Callable[..., dict[str, float]]) -> dict[str, Any]:
  """Trains (or resumes) every generation, then evaluates them and their ensemble.

  Args:
    config: the chain's config (``scheme.name == 'born_again'``).
    workdir: the chain's folder (its parent must exist).
    run, build, evaluate_with: ``train.run``, ``train.build`` and
      ``tasks.classification.evaluate_with`` (passed in: they import the schemes).

  Returns:
    The chain's results (also in ``workdir/results.json``), or ``{'preempted':
    True, 'step', 'generation_workdir', 'workdir'}`` when a generation was
    preempted (the chain stops there; rerunning resumes it).
  """
  check_chain(config)
  generations = config.scheme.generations
  first = config.scheme.first_generation
  gen_dirs = [os.path.abspath(first) if first else os.path.join(workdir, 'gen0')]
  gen_dirs += [os.path.join(workdir, f'gen{k}') for k in range(1, generations + 1)]
  if not first:
    build(generation_config(config, 0, ''))   # Config errors before any folder is made.
  start_time = time.time()
  os.makedirs(workdir, exist_ok=True)
  for k in range(0 if not first else 1, generations + 1):
    last = run(generation_config(config, k, gen_dirs[k - 1] if k else ''), gen_dirs[k])
    if last.get('preempted'):
      return _write_results(workdir, {'preempted': True, 'step': last['step'],
                                      'generation_workdir': gen_dirs[k],
                                      'workdir': os.path.abspath(workdir)})

  exp = build(generation_config(config, 1, gen_dirs[0]))
  loaded = [teachers.load_trained(
      d, teachers.saved_model_config(d), num_classes=exp.context.spec.num_classes,
      sample_images=exp.context.sample_images, mesh=exp.mesh,
      rules=config.sharding.rules, role=f'generation {k}') for k, d in enumerate(gen_dirs)]
  spec = exp.context.spec

  def evaluate_members(members, first_index):
    step = compile_lib.jit_replicated(functools.partial(
        ensemble_eval_step, modules=tuple(m.module for m in members), mean=spec.mean,
        std=spec.std, first=first_index), exp.mesh)
    variables = tuple(m.variables for m in members)
    return evaluate_with(config, exp.mesh, lambda batch: step(variables, batch))

  per_generation = evaluate_members(loaded, 0)
  distilled = evaluate_members(loaded[1:], 1)
  summary = {**{k: v for k, v in per_generation.items() if k.startswith('gen')},
             **{k: v for k, v in distilled.items() if k.startswith('ensemble')},
             'examples': distilled['examples']}
  results = {
      'generations': [{'generation': k, 'workdir': d,
                       'accuracy': per_generation[f'gen{k}_accuracy']}
                      for k, d in enumerate(gen_dirs)],
      'eval': summary, 'steps': last['steps'], 'wall_time_s': time.time() - start_time,
      'workdir': os.path.abspath(workdir)}
  return _write_results(workdir, results)


def _write_results(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  return results
