"""The one training loop of every task: ``run(config, workdir)``.

Order of work: check everything that can be wrong (config keys, names, data,
batch sizes, the teacher) and compile the step (``build``: the task named by
``config.task``, ``distill_jax.tasks``), then create and lock the workdir,
check that the config continues the run it holds (``distill_jax.workdir``),
restore the newest verified checkpoint or initialise the state, check the
teachers on the first eval batches (``distill_jax.teacher_check``), and loop.
A failed check leaves no new workdir behind, so the corrected command can
simply be rerun; a rerun of an interrupted run
resumes from its latest checkpoint, bit-exactly (every batch is a function of
``(seed, step)``).

The loop owns the cadence (in steps: ``train.log_every_steps``,
``eval_every_steps`` / ``checkpoint_every_steps``, or their ``*_epochs``
conveniences), the NaN/Inf guard (``train.nan_policy``), preemption
(SIGTERM -> checkpoint -> ``{'preempted': True}``), ``metrics.jsonl``, the
progress line and ``results.json`` (``eval``: the final evaluation summary,
the same key for every task).
"""

import functools
import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from distill_jax import checkpoint
from distill_jax import defaults
from distill_jax import distributed
from distill_jax import metrics as metrics_lib
from distill_jax import preemption
from distill_jax import schemes
from distill_jax import tasks
from distill_jax import teacher_check
from distill_jax import workdir as workdir_lib
from distill_jax.tasks import classification
from distill_jax.tasks.base import Experiment
from distill_jax.tasks.base import global_batch

RESULTS_FILE = checkpoint.RESULTS_FILE
REPORT_FILE = 'report.md'


def check_config(config: ml_collections.ConfigDict) -> None:
  """The checks of every run before anything is built: keys (``defaults.validate``),
  ``train.nan_policy``, the counts and cadences, the compute dtype."""
  defaults.validate(config)
  check_nan_policy(config)
  check_counts(config)


# The least value of each count (integers) and cadence (numbers) of a run.
MIN_COUNTS = {'train.batch_size': 1, 'train.eval_batch_size': 1, 'train.log_every_steps': 1,
              'train.keep_checkpoints': 1, 'train.num_steps': 0, 'train.eval_every_steps': 0,
              'train.checkpoint_every_steps': 0, 'optim.warmup_steps': 0}
MIN_AMOUNTS = {'train.num_epochs': 0.0, 'train.eval_every_epochs': 0.0,
               'train.checkpoint_every_epochs': 0.0, 'optim.warmup_epochs': 0.0}
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')


def check_counts(config: ml_collections.ConfigDict) -> None:
  """Counts, cadences and ``student.dtype`` in range, each error naming the key,
  the value and what is allowed."""
  for key, least in {**MIN_COUNTS, **MIN_AMOUNTS}.items():
    section, name = key.split('.')
    value = config[section][name]
    integer = key in MIN_COUNTS
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < least:
      raise ValueError(f'{key}={value!r} must be {"an integer" if integer else "a number"} '
                       f'>= {least}.')
  if config.train.num_steps == 0 and config.train.num_epochs <= 0:
    raise ValueError(f'train.num_steps=0 and train.num_epochs={config.train.num_epochs}: '
                     'nothing to train; set train.num_steps or train.num_epochs > 0.')
  if config.student.dtype not in COMPUTE_DTYPES:
    raise ValueError(f'student.dtype={config.student.dtype!r}: the compute dtype is one of '
                     f'{", ".join(COMPUTE_DTYPES)} (params and optimizer state stay float32).')


def build(config: ml_collections.ConfigDict, devices=None) -> Experiment:
  """Checks the config and builds its task's models, data, state layout and steps."""
  check_config(config)
  return tasks.build(config, devices)


def _every(steps: int, epochs: float, steps_per_epoch: int, total: int) -> int:
  """A cadence in steps: ``steps`` if > 0, else ``epochs`` passes, else only at the end."""
  if steps > 0:
    return steps
  return max(1, int(round(epochs * steps_per_epoch))) if epochs > 0 else total


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')


def _format_bytes(count: int) -> str:
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if count >= size:
      return f'{count / size:.1f} {unit}'
  return f'{count} B'


log = metrics_lib.log


def prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise FileNotFoundError(
        f'The workdir\'s parent folder {parent!r} does not exist; create it first '
        'or choose another --workdir.')
  return workdir


NAN_POLICIES = ('stop', 'skip')


class NonFiniteError(FloatingPointError):
  """A step's loss or gradient norm was NaN/Inf and ``train.nan_policy`` is ``'stop'``."""


def check_nan_policy(config: ml_collections.ConfigDict) -> None:
  if config.train.nan_policy not in NAN_POLICIES:
    raise ValueError(
        f'config.train.nan_policy={config.train.nan_policy!r}: use \'stop\' (stop at a '
        'NaN/Inf loss or gradient, keeping the last good checkpoint) or \'skip\' (drop '
        'such steps and go on).')


def drop_rows_after(workdir: str, step: int) -> None:
  """Removes rows past ``step`` from ``metrics.jsonl``: a killed run logged them
  (the last maybe half-written), and the resumed run logs them again."""
  path = os.path.join(workdir, metrics_lib.METRICS_FILE)
  if jax.process_index() != 0 or not os.path.exists(path):
    return

  def keep(line):
    try:
      return json.loads(line)['step'] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
      return False
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line if line.endswith('\n') else line + '\n' for line in lines if keep(line)]
  if len(kept) < len(lines):
    with open(path + '.tmp', 'w') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)


def window_means(window: list[tuple[int, dict[str, Any]]]) -> dict[str, float]:
  """Mean of each metric over a log window's fetched ``(step, metrics)`` rows,
  over its finite steps only (all of them if none is finite), plus
  ``nonfinite_steps`` (how many were skipped)."""
  good = [m for _, m in window if not is_nonfinite(m)]
  scalars = metrics_lib.mean_of(good or [m for _, m in window])
  scalars.pop('nonfinite', None)
  scalars['nonfinite_steps'] = len(window) - len(good)
  return scalars


def restore_or_init(workdir: str, config: ml_collections.ConfigDict, abstract_state,
                    init_fn) -> tuple[Any, Any, int]:
  """Opens ``workdir`` for a run: ``(checkpoint manager, state, start_step)``.

  Writes ``config.json`` (process 0), restores the newest verified checkpoint
  (``checkpoint.resume_point``) into ``abstract_state``'s layout, else
  ``init_fn(PRNGKey(config.seed))``, and drops the ``metrics.jsonl`` rows past
  the restored step.
  """
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    checkpoint.write_config(workdir, config)
  found = checkpoint.resume_point(workdir)
  manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
  if found is None:
    state = init_fn(jax.random.PRNGKey(config.seed))
  else:
    state = checkpoint.restore_step(manager, abstract_state, found.step)
  start_step = int(jax.device_get(state.step))
  if start_step:
    log(f'Resumed from the checkpoint at step {start_step} ({found.path}, '
        + (f'verified, sha256 {found.sha256[:12]})' if found.sha256 else 'unverified)') + '.')
  drop_rows_after(workdir, start_step)
  return manager, state, start_step


def with_teacher_sources(config: ml_collections.ConfigDict,
                         sources: tuple[teacher_check.TeacherSource, ...]
                         ) -> ml_collections.ConfigDict:
  """``config`` plus ``teacher_checkpoints``: where each loaded teacher came
  from (step, SHA-256), as the run's ``config.json`` records it."""
  if not sources:
    return config
  recorded = config.copy_and_resolve_references()
  with recorded.unlocked():
    recorded.teacher_checkpoints = [source.provenance() for source in sources]
  return recorded


def check_teachers(exp: Experiment, state: Any) -> None:
  """``teacher_check.check`` on the first eval batches, before the first step.

  Raises:
    teacher_check.TeacherCheckError: the teacher is broken.
  """
  summary = exp.evaluate(state, max_batches=teacher_check.CHECK_BATCHES)
  teacher_check.check(summary, exp.compiled.teacher_sources, exp.config.teacher.dtype)
  figures = ', '.join(f'{k} {v:.4f}' for k, v in summary.items()
                      if k.startswith('teacher_') and isinstance(v, float))
  log(f'Teacher check on {teacher_check.CHECK_BATCHES} eval batches: {figures}.')


def run(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Trains ``config``'s student in ``workdir`` (resuming if it has checkpoints).

  Returns the final results (also written to ``workdir/results.json``). On a
  preemption notice (SIGTERM; ``distill_jax.preemption``) it saves a
  checkpoint at the next step boundary and returns ``{'preempted': True,
  'step': ...}`` instead; rerunning resumes bit-exactly.

  Raises:
    NonFiniteError: a NaN/Inf loss or gradient with ``train.nan_policy='stop'``.
  """
  start_time = time.time()
  workdir = prepare_workdir(workdir)
  with preemption.watch() as notice:
    if config.scheme.name == 'born_again':
      check_config(config)  # (Each generation's own build checks its config too.)
      return schemes.born_again.run_chain(
          config, workdir, run=functools.partial(run, devices=devices),
          build=functools.partial(build, devices=devices),
          evaluate_with=classification.evaluate_with)
    exp = build(config, devices)
    compiled = exp.compiled
    num_params = compiled.num_params
    log(f'{exp.description}; mesh {dict(exp.mesh.shape)}, {jax.process_count()} process(es)')
    log('per device: ' + ', '.join(f'{k} {_format_bytes(v)}' for k, v in compiled.memory.items()))

    recorded = with_teacher_sources(config, compiled.teacher_sources)
    created = not os.path.exists(workdir)
    with workdir_lib.lock(workdir):
      workdir_lib.check_continues(workdir, recorded)
      manager, state, start_step = restore_or_init(workdir, recorded, compiled.abstract_state,
                                                   compiled.init_fn)
      if compiled.teacher_sources and start_step < exp.total_steps:
        try:
          check_teachers(exp, state)
        except teacher_check.TeacherCheckError:
          manager.close()
          if created and jax.process_index() == 0:
            shutil.rmtree(workdir)  # It holds only this run's config.json.
          raise
      writer = metrics_lib.MetricWriter(workdir)
      try:
        results = _train_loop(exp, state, manager, writer, start_step, notice)
      finally:
        writer.close()
        manager.close()  # Waits for a save in flight.
  results.update(num_params=num_params, wall_time_s=time.time() - start_time,
                 steps=exp.total_steps, workdir=workdir)
  markdown = results.pop('report_markdown', None)
  if jax.process_index() == 0:
    path = os.path.join(workdir, RESULTS_FILE)
    with open(path + '.tmp', 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(path + '.tmp', path)
    if markdown is not None:
      with open(os.path.join(workdir, REPORT_FILE), 'w') as f:
        f.write(markdown + '\n')
      log(f'Report: {os.path.join(workdir, REPORT_FILE)}\n{markdown}')
  distributed.barrier('results written')  # A next run (born_again) reads them on every process.
  return results


def is_nonfinite(step_metrics: dict[str, Any]) -> bool:
  return bool(step_metrics.get('nonfinite', 0.0) > 0 or not np.isfinite(step_metrics['loss'])
              or not np.isfinite(step_metrics.get('grad_norm', 0.0)))


def _describe_nonfinite(step: int, step_metrics: dict[str, Any]) -> str:
  """'Step 5: the loss is not finite (loss=nan, grad_norm=1.15)'."""
  bad = [name for name in ('loss', 'grad_norm')
         if not np.isfinite(step_metrics.get(name, 0.0))] or ['loss']
  values = ', '.join(f'{name}={float(step_metrics[name]):.4g}' for name in ('loss', 'grad_norm')
                     if name in step_metrics)
  return (f'Step {step}: the {" and the ".join(bad)} {"is" if len(bad) == 1 else "are"} '
          f'not finite ({values})')


class NonFiniteGuard:
  """Applies ``train.nan_policy`` to fetched per-step metrics, before anything is saved.

  The steps themselves never write a non-finite update into the state
  (``steps.keep_if_finite``); this decides whether the run stops or goes on.
  """

  def __init__(self, policy: str, manager):
    self.policy, self.manager = policy, manager
    self.skipped = 0

  def check(self, fetched: list[tuple[int, dict[str, Any]]]) -> None:
    for step, step_metrics in fetched:
      if is_nonfinite(step_metrics):
        if self.policy == 'stop':
          raise self._error(step, step_metrics)
        if not self.skipped:
          log(f'{_describe_nonfinite(step, step_metrics)}: the step was skipped '
              '(train.nan_policy=skip); later ones are counted in the log lines.')
        self.skipped += 1

  def _error(self, step: int, step_metrics: dict[str, Any]) -> NonFiniteError:
    self.manager.wait_until_finished()
    return NonFiniteError(
        f'{_describe_nonfinite(step, step_metrics)}; training stopped '
        f'(train.nan_policy=stop) and saved nothing after step {step - 1}. '
        f'{self._last_good()} Lower optim.learning_rate, set optim.grad_clip_norm, or set '
        'train.nan_policy=skip to drop such steps.')

  def _last_good(self) -> str:
    """Which saved checkpoint a rerun resumes from (process 0 verifies them)."""
    if jax.process_index() != 0:
      return 'Process 0\'s error names the last good checkpoint.'
    try:
      good = checkpoint.newest_verified(str(self.manager.directory))
    except checkpoint.CheckpointError as e:
      return f'No saved checkpoint is usable: {e}'
    if good is None:
      return 'No checkpoint was saved before it (a rerun starts from scratch).'
    verified = 'verified' if good.sha256 else 'unverified: saved before checksums were kept'
    return (f'The last good checkpoint is step {good.step}: {good.path} ({verified}; '
            'rerunning resumes from there).')


def _train_loop(exp: Experiment, state, manager, writer, start_step: int,
                notice: preemption.Notice) -> dict[str, Any]:
  config, compiled = exp.config, exp.compiled
  total, steps_per_epoch = exp.total_steps, exp.steps_per_epoch
  log_every = config.train.log_every_steps
  eval_every = _every(config.train.eval_every_steps, config.train.eval_every_epochs,
                      steps_per_epoch, total)
  checkpoint_every = _every(config.train.checkpoint_every_steps,
                            config.train.checkpoint_every_epochs, steps_per_epoch, total)
  items, unit = exp.items_per_step
  guard = NonFiniteGuard(config.train.nan_policy, manager)
  if start_step < total and notice.reached(start_step, boundary=True):
    log(f'{notice.signal_name} received before training resumed; stopping at step '
        f'{start_step} (nothing new to save).')
    return {'preempted': True, 'step': start_step, 'nonfinite_steps': 0}
  batches = exp.train_batches(start_step)
  pending = []  # (step, metrics on device): fetched at log/checkpoint/preemption steps only.
  window = []   # (step, fetched metrics) of the current log window.
  window_start, window_step = time.time(), start_step
  input_wait = 0.0  # Host seconds spent waiting for the next batch in this log window.
  for step in range(start_step + 1, total + 1):
    wait_start = time.perf_counter()
    batch = global_batch(next(batches), compiled.batch_sharding)
    input_wait += time.perf_counter() - wait_start
    extra = {}
    if exp.prepare is not None:
      batch, extra = exp.prepare(state, batch, step)
    state, step_metrics = compiled.train_fn(state, compiled.teacher_variables, batch)
    pending.append((step, {**step_metrics, **extra}))
    log_now = step % log_every == 0 or step == total
    save_now = step % checkpoint_every == 0 or step == total
    preempted = notice.reached(step, boundary=log_now or save_now)
    if log_now or save_now or preempted:
      fetched = jax.device_get(pending)
      pending = []
      guard.check(fetched)  # Raises (nan_policy=stop) before anything is saved.
      window += fetched
    if log_now:  # (A preempted run drops its partial window: rows keep the cadence.)
      scalars = window_means(window)
      window = []
      now = time.time()
      rate = (step - window_step) / max(now - window_start, 1e-9)
      input_share = input_wait / max(now - window_start, 1e-9)
      window_start, window_step, input_wait = now, step, 0.0
      writer.write(step, {f'train/{k}': v for k, v in scalars.items()} |
                   {'train/steps_per_second': rate, 'train/input_wait_fraction': input_share,
                    f'train/{unit}_per_second': rate * items})
      skipped = scalars['nonfinite_steps']
      log(f'step {step}/{total} (epoch {step / steps_per_epoch:.2f}) | {exp.progress(scalars)} | '
          f'{rate:.2f} steps/s, {rate * items:.0f} {unit}/s, '
          f'input wait {100 * input_share:.0f}% | '
          f'ETA {format_duration((total - step) / max(rate, 1e-9))}' +
          (f' | {skipped} non-finite step(s) skipped' if skipped else ''))
    if (step % eval_every == 0 or step == total) and not preempted:
      summary = exp.evaluate(state)
      writer.write(step, {f'eval/{k}': v for k, v in summary.items()})
      log(f'eval at step {step}: ' + ', '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
          for k, v in summary.items()))
      # Eval time is not training speed.
      window_start, window_step, input_wait = time.time(), step, 0.0
    if save_now or preempted:
      checkpoint.save(manager, state)
    if preempted:
      manager.wait_until_finished()
      log(f'{notice.signal_name} received: saved the checkpoint at step {step} '
          f'({checkpoint.step_dir(manager, step)}); rerun the same command to resume.')
      return {'preempted': True, 'step': step, 'nonfinite_steps': guard.skipped}
  manager.wait_until_finished()
  if start_step >= total:
    summary = exp.evaluate(state)
  results = {'eval': summary, 'nonfinite_steps': guard.skipped}
  if exp.report is not None:
    log('Writing the report (sizes, decoding speed, answers)...')
    results['report'], results['report_markdown'] = exp.report(state, summary)
  return results
