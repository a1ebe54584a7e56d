"""Language modelling: a pretrained teacher, a Llama student on its tokenizer, token-level methods.

Examples are (prompt, response) pairs of token ids (``data.text``); the train
step joins them into the model's inputs and next-token targets
(``text.make_lm_batch``) and distils only the response tokens (``loss_mask``).
The same layout carries plain text (Shakespeare windows, a short prefix as the
prompt), teacher-generated responses (sequence-level KD, ``data.name=seqkd``),
cached sparse teacher targets (``data.name=logit_cache``, no teacher forward)
and the student's own samples (on-policy GKD, ``on_policy.lam > 0``), so
every token-level method serves all four. A student on its own tokenizer
(``student.tokenizer``; random, or pretrained of another family) reads
Shakespeare windows tokenized by both models and
aligned by characters (``data.token_alignment``): the batch then also holds the
teacher's ``teacher_*`` prompt and response and each side's spans, for the
cross-tokenizer methods (``token_uld``, ``token_gold``).

Every process reads only its share of each global batch through the one
``data.pipeline`` (epochs without replacement, prefetched), and the teacher is
read straight into its shardings (``config.sharding.teacher_rules``, else
``rules``) on every host. Evaluation: held-out perplexity, next-token
agreement with the teacher, KL(teacher || student) and bits per character on
``data.eval_windows`` windows of the held-out plays.
"""

import dataclasses
import functools
import itertools
import os
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill_jax import checksums
from distill_jax import compile as compile_lib
from distill_jax import defaults
from distill_jax import methods
from distill_jax import metrics as metrics_lib
from distill_jax import optim
from distill_jax import registry
from distill_jax import sharding
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.data import logit_cache
from distill_jax.data import pipeline
from distill_jax.data import text
from distill_jax.llm import report as report_lib
from distill_jax.llm import student_init
from distill_jax.llm import weights
from distill_jax.llm.model import Llama, LlamaConfig, linear_logits
from distill_jax.llm.sampling import SamplingParams, generate
from distill_jax.llm import vocabulary
from distill_jax.llm.tokenizer import Tokenizer, load_tokenizer, resolve_tokenizer
from distill_jax.losses import kl_divergence
from distill_jax.methods.base import Method
from distill_jax.tasks import base
from distill_jax.teacher_check import TeacherSource

DATA_SOURCES = ('shakespeare', 'seqkd', 'logit_cache')
LOGITS = ('auto', 'fused', 'materialized')
STUDENT_INITS = ('random', 'teacher_layers', 'pruned', 'pretrained')


def check(config: ml_collections.ConfigDict) -> None:
  """Everything about an LM config that can be checked without loading anything."""
  d = config.data
  if d.name not in DATA_SOURCES:
    raise ValueError(f'data.name={d.name!r}: language models read one of '
                     f'{", ".join(DATA_SOURCES)}.')
  if d.name == 'seqkd' and not (d.data_dir and d.seqkd_name):
    raise ValueError('data.name=seqkd needs data.data_dir and data.seqkd_name '
                     '(a data set written by python -m distill_jax.llm.seqkd).')
  cache = d.name == 'logit_cache'
  if cache and not d.data_dir:
    raise ValueError('data.name=logit_cache needs data.data_dir: a cache written by '
                     'python -m distill_jax.tools.cache_teacher_logits --llama=...')
  if cache and config.on_policy.lam > 0:
    raise ValueError('data.name=logit_cache trains on the cached sequences only; '
                     f'on_policy.lam={config.on_policy.lam} needs a prompt data source.')
  if (config.method.name == 'token_sparse_kl') != cache:
    raise ValueError(f'method.name={config.method.name!r} with data.name={d.name!r}: '
                     'token_sparse_kl and data.name=logit_cache go together (the cache '
                     'holds the targets that method reads).')
  if config.train.lm_logits not in LOGITS:
    raise ValueError(f'train.lm_logits={config.train.lm_logits!r}: choose one of '
                     f'{", ".join(LOGITS)}.')
  student = config.student
  if student.init not in STUDENT_INITS:
    raise ValueError(f'student.init={student.init!r}; choose one of {", ".join(STUDENT_INITS)}.')
  if bool(student.init_layers) > (student.init == 'teacher_layers'):
    raise ValueError('student.init_layers is for student.init=teacher_layers.')
  if student.init == 'pruned' and student.calibration_batches < 1:
    raise ValueError(f'student.calibration_batches={student.calibration_batches}: a pruned '
                     'student needs >= 1 batch to rank channels on.')
  if bool(student.pretrained) != (student.init == 'pretrained'):
    raise ValueError('student.init=pretrained and student.pretrained (the checkpoint) go '
                     'together.')
  if config.student.model != 'llama':
    raise ValueError(f'student.model={config.student.model!r}: language-model students are '
                     "'llama' (llm.model.Llama; its fields in student.kwargs).")
  for key in ('data.prompt_len', 'data.response_len', 'data.eval_windows'):
    section, name = key.split('.')
    if config[section][name] < 1:
      raise ValueError(f'{key}={config[section][name]} must be >= 1.')
  if not 0.0 <= config.on_policy.lam <= 1.0:
    raise ValueError(f'on_policy.lam={config.on_policy.lam} must be in [0, 1].')
  _check_cross_tokenizer(config)
  if config.optim.warmup_epochs:
    raise ValueError(f'optim.warmup_epochs={config.optim.warmup_epochs}: language-model runs '
                     'count in steps; set optim.warmup_steps (an epoch is a pass over the '
                     'training windows, thousands of steps).')


def _check_cross_tokenizer(config: ml_collections.ConfigDict) -> None:
  """A student tokenizer other than the teacher's goes with a cross-tokenizer method,
  a random or pretrained student and Shakespeare windows."""
  name, tokenizer = config.method.name, config.student.tokenizer
  crosses = lambda n: getattr(registry.get('methods', n), 'cross_tokenizer', False)
  across = name in registry.names('methods') and crosses(name)
  if across and not tokenizer:
    raise ValueError(f'method.name={name!r} distills across tokenizers: set student.tokenizer '
                     "(e.g. 'minilm'); with the teacher's tokenizer use a token-level method "
                     'such as token_kl.')
  if not tokenizer:
    return
  if not across:
    raise ValueError(f'student.tokenizer={tokenizer!r}: the student has its own vocabulary, '
                     f'so method.name={name!r} (one vocabulary) cannot compare the two; use '
                     f'{" or ".join(n for n in base.methods_of("language_model") if crosses(n))}.')
  if config.student.init not in ('random', 'pretrained'):
    raise ValueError(f'student.tokenizer={tokenizer!r} needs student.init=random or pretrained '
                     f'(a student built on its own vocabulary); got {config.student.init!r}.')
  if config.data.name != 'shakespeare':
    raise ValueError(f'student.tokenizer={tokenizer!r} needs data.name=shakespeare; got '
                     f'{config.data.name!r}.')
  if config.on_policy.lam > 0:
    raise ValueError(f'student.tokenizer={tokenizer!r}: on-policy batches (on_policy.lam='
                     f'{config.on_policy.lam}) are not re-tokenized for the teacher; set 0.')
  for key in ('student_prompt_len', 'student_response_len'):
    if config.data[key] < 0:
      raise ValueError(f'data.{key}={config.data[key]} must be >= 0 (0: the teacher\'s).')


def student_config(config: ml_collections.ConfigDict, vocab_size: int) -> LlamaConfig:
  """The student's ``LlamaConfig``: ``student.kwargs`` on the teacher's vocabulary."""
  try:
    return LlamaConfig(vocab_size=vocab_size, **config.student.kwargs.to_dict())
  except TypeError as e:
    fields = ', '.join(f.name for f in dataclasses.fields(LlamaConfig) if f.name != 'vocab_size')
    raise ValueError(f'student.kwargs: {e}; a llama student takes {fields}.') from e


# The student.kwargs a teacher_layers / pruned / pretrained student may change (the rest is
# the source's), and the widths a pruned one is cut to.
_LAYOUT_KWARGS = ('scan_layers', 'remat')
_PRUNED_WIDTHS = ('hidden_size', 'intermediate_size', 'num_kv_heads')

ParamsFn = Callable[[Any], Any]  # the student's param shardings -> its initial params


def _default_kwargs() -> dict[str, Any]:
  """The language-model default ``student.kwargs`` (keys left there are not used
  by a student built on another model)."""
  return defaults.default_config('language_model').student.kwargs.to_dict()


def _source_architecture(config: ml_collections.ConfigDict, source: LlamaConfig, what: str,
                         allowed: tuple[str, ...]) -> dict[str, Any]:
  """The ``student.kwargs`` a student built on ``source`` keeps: ``allowed`` keys.

  Other keys must be at their defaults (then unused) or equal ``source``'s.
  """
  kwargs = config.student.kwargs.to_dict()
  untouched = _default_kwargs()
  unset = object()
  clashes = [f'{k}={v!r} ({what}: {getattr(source, k, None)!r})' for k, v in kwargs.items()
             if k not in allowed and v != untouched.get(k, unset)
             and v != getattr(source, k, None)]
  if clashes:
    raise ValueError(f'student.init={config.student.init}: the architecture comes from '
                     f'{what}, but student.kwargs sets {", ".join(clashes)}; only '
                     f'{", ".join(allowed)} may change.')
  return {k: kwargs[k] for k in allowed if k in kwargs}


def student_architecture(config: ml_collections.ConfigDict, teacher_config: LlamaConfig,
                         vocab_size: int | None = None
                         ) -> tuple[LlamaConfig, tuple[int, ...] | str | None]:
  """The student's ``LlamaConfig`` (``student.init``, ``student.kwargs``) and its
  source: None (random), the teacher block indices (``teacher_layers``),
  ``'pruned'`` or the checkpoint path (``pretrained``). Reads no tensors.
  ``vocab_size``: a random student's, when it has its own tokenizer."""
  init = config.student.init
  if init == 'random':
    return student_config(config, vocab_size or teacher_config.vocab_size), None
  if init == 'teacher_layers':
    kept = _source_architecture(config, teacher_config, 'the teacher',
                                _LAYOUT_KWARGS + ('num_layers',))
    if config.student.init_layers:
      layers = student_init.check_layers(config.student.init_layers, teacher_config.num_layers)
      if kept.get('num_layers', len(layers)) not in (len(layers),
                                                     _default_kwargs()['num_layers']):
        raise ValueError(f'student.kwargs.num_layers={kept["num_layers"]} but student.'
                         f'init_layers names {len(layers)} blocks.')
    else:
      layers = student_init.evenly_spaced_layers(teacher_config.num_layers, kept['num_layers'])
    return dataclasses.replace(teacher_config, **{**kept, 'num_layers': len(layers)}), layers
  if init == 'pruned':
    kept = _source_architecture(config, teacher_config, 'the teacher',
                                _LAYOUT_KWARGS + _PRUNED_WIDTHS)
    for key in _PRUNED_WIDTHS:
      kept.setdefault(key, getattr(teacher_config, key))
      if not 1 <= kept[key] <= getattr(teacher_config, key):
        raise ValueError(f'student.init=pruned: student.kwargs.{key}={kept[key]}; the teacher '
                         f'has {getattr(teacher_config, key)} (prune to 1..that).')
    per_group = teacher_config.num_heads // teacher_config.num_kv_heads
    return dataclasses.replace(teacher_config, **kept, head_dim=teacher_config.head_dim,
                               num_heads=kept['num_kv_heads'] * per_group), 'pruned'
  try:
    path = weights.resolve_pretrained(config.student.pretrained)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'student.pretrained: {e}') from e
  pretrained = weights.pretrained_config(path)
  return dataclasses.replace(
      pretrained, **_source_architecture(config, pretrained, path, _LAYOUT_KWARGS)), path


def width_importance(teacher: Llama, teacher_variables: Any, local_batches: Iterator[base.Batch],
                     batch_sharding: Any) -> dict[str, np.ndarray]:
  """``student_init.width_importance`` of ``teacher`` summed over the batches."""

  def one(batch):
    joined = lm_batch(batch)
    _, state = teacher.apply(teacher_variables, joined['inputs'],
                             token_mask=joined['token_mask'], return_logits=False,
                             mutable=['intermediates'])
    return student_init.width_importance(state['intermediates'], teacher.config)

  replicated = sharding.replicated(batch_sharding.mesh)
  return jax.device_get(base.sum_over(local_batches, batch_sharding,
                                      jax.jit(one, out_shardings=replicated)))


class StudentStart(NamedTuple):
  """Where the student starts (``initial_student``).

  Attributes:
    config: its architecture.
    params_fn: ``params_fn(shardings)`` gives its initial ``params`` in the
      student's shardings (None: random init).
    description: for the start-up line.
    vocab_map: ``[V_s]`` int32, the teacher label of each student label
      (``llm.vocabulary.one_family_map``; ``-1``: none), for a pretrained student
      whose vocabulary is the teacher's family but not its size; else None.
  """
  config: LlamaConfig
  params_fn: ParamsFn | None
  description: str
  vocab_map: np.ndarray | None = None


def initial_student(config: ml_collections.ConfigDict, teacher: Llama, teacher_variables: Any,
                    teacher_tokenizer: Tokenizer, *,
                    calibration: Callable[[], Iterator[base.Batch]],
                    batch_sharding: Any, vocab_size: int | None = None) -> StudentStart:
  """The student's architecture, its initial params and a description (``student.init``).

  ``calibration()`` yields this process's part of the batches a ``pruned``
  student's importance is measured on (placed with ``batch_sharding``).
  ``vocab_size``: the size of the student's own tokenizer (``student.tokenizer``):
  a random student's vocabulary, or what a pretrained one must cover (its
  labels are then its own, not mapped to the teacher's).
  """
  model_config, source = student_architecture(config, teacher.config, vocab_size)
  init = config.student.init
  if init == 'random':
    return StudentStart(model_config, None, 'random init')
  if init == 'pruned':
    def pruned(shardings):
      importance = width_importance(teacher, teacher_variables, calibration(), batch_sharding)
      kept = student_init.kept_channels(importance, teacher.config, model_config)
      select = functools.partial(student_init.pruned_params, teacher_config=teacher.config,
                                 kept=kept, student_config=model_config)
      return jax.jit(select, out_shardings=shardings)(teacher_variables['params'])
    c = model_config
    return StudentStart(model_config, pruned, (
        f'init: the teacher pruned to width {c.hidden_size}, SwiGLU {c.intermediate_size}, '
        f'{c.num_heads} heads / {c.num_kv_heads} KV heads by activations on '
        f'{config.student.calibration_batches} batches'))
  if init == 'teacher_layers':
    select = functools.partial(student_init.teacher_layer_params, teacher_config=teacher.config,
                               layers=source, student_config=model_config)
    return StudentStart(model_config, (lambda shardings: jax.jit(
        select, out_shardings=shardings)(teacher_variables['params'])), (
            f'init: teacher blocks {list(source)} of {teacher.config.num_layers}'))
  load = lambda shardings: weights.load_pretrained(
      source, shardings={'params': shardings}, scan_layers=model_config.scan_layers)[1]['params']
  if vocab_size is not None:
    if model_config.vocab_size < vocab_size:
      raise ValueError(f'student.pretrained={source} has {model_config.vocab_size:,} labels, '
                       f'fewer than the {vocab_size:,} tokens of student.tokenizer='
                       f'{config.student.tokenizer!r}: give it its own tokenizer.')
    return StudentStart(model_config, load, f'init: {source}')
  sizes = f'{model_config.vocab_size:,} labels, the teacher {teacher.config.vocab_size:,}'
  try:
    theirs = load_tokenizer(source)
  except (ValueError, FileNotFoundError):
    theirs = None  # No tokenizer in the checkpoint: the sizes are all there is to check.
  if theirs is None and model_config.vocab_size != teacher.config.vocab_size:
    raise ValueError(f'student.pretrained={source}: no tokenizer in it to map its labels by, '
                     f'and it has {sizes}; token-level distillation needs one vocabulary.')
  vocab_map, note = None, ' (no tokenizer in it: vocabulary checked by size)'
  if theirs is not None:
    try:
      vocab_map = vocabulary.one_family_map(theirs, teacher_tokenizer,
                                            student_vocab=model_config.vocab_size,
                                            teacher_vocab=teacher.config.vocab_size)
    except ValueError as e:
      raise ValueError(f'student.pretrained={source}: {e}') from e
    note = '' if vocab_map is None else (
        f' (its vocabulary mapped to the teacher\'s by token string: {sizes}; '
        f'{int(np.sum(vocab_map < 0)):,} student labels have no teacher label)')
  return StudentStart(model_config, load, f'init: {source}{note}', vocab_map)


def starting_from(compiled: compile_lib.Compiled, params_fn: ParamsFn) -> Callable[..., Any]:
  """``compiled.init_fn`` with the student's params from ``params_fn`` (a fresh
  run only: a resumed one restores its checkpoint instead)."""
  shardings = jax.tree.map(lambda x: x.sharding, compiled.abstract_state.params)
  want = jax.tree.structure(compiled.abstract_state.params)

  def init_fn(rng):
    state = compiled.init_fn(rng)
    params = params_fn(shardings)
    if jax.tree.structure(params) != want:
      raise ValueError(f'The initial student params have the tree {jax.tree.structure(params)}'
                       f', the student needs {want}.')
    return state.replace(params=params)

  return init_fn


def uses_fused_logits(config: ml_collections.ConfigDict, method: Method) -> bool:
  """Whether the train step hands ``method`` ``LinearLogits`` (``train.lm_logits``).

  ``auto`` is fused for every method that has a fused form: smaller and not
  slower at the vocabularies of pretrained teachers (benchmarks/README.md).
  """
  if config.train.lm_logits == 'fused' and not method.fused:
    fused = [n for n in base.methods_of('language_model') if registry.get('methods', n).fused]
    raise ValueError(f'train.lm_logits=fused: method {config.method.name!r} has no fused form '
                     f'(those that do: {", ".join(fused)}); use auto or materialized.')
  return method.fused and config.train.lm_logits != 'materialized'


def _forward(model: Llama, variables: Any, batch: base.Batch, fused: bool = False,
             mesh: Any = None, rules: Sequence[tuple[str, Any]] = (), prefix: str = '',
             attention_features: tuple[str, ...] = ()):
  """``(logits [B, T, V] | LinearLogits, features)`` of ``model`` on ``batch``'s
  ``{prefix}inputs`` (with the ``attention_features`` a method reads); with
  ``mesh``, its activations are laid out by ``rules``
  (``sharding.activation_layout``)."""
  with sharding.activation_layout(mesh, rules):
    logits, features = model.apply(variables, batch[prefix + 'inputs'],
                                   token_mask=batch[prefix + 'token_mask'],
                                   return_logits=not fused,
                                   attention_features=attention_features)
  if fused:
    logits = linear_logits(model, variables['params'], features['pre_logits'], mesh)
  return logits, features


def lm_batch(batch: base.Batch) -> base.Batch:
  """``text.make_lm_batch`` of an example batch, with any cached targets kept.

  A cross-tokenizer batch (``teacher_prompt`` ...) also gives the teacher's
  ``teacher_inputs``, ``teacher_token_mask``, ``teacher_targets``,
  ``teacher_loss_mask`` ``[B, T_t]`` and each side's target spans ``span``
  ``[B, T]`` and ``teacher_span`` ``[B, T_t]`` (``-1`` off the response;
  ``methods.token_uld``).
  """
  def join(prefix):
    return text.make_lm_batch(*(batch[f'{prefix}{k}'] for k in (
        'prompt', 'prompt_mask', 'response', 'response_mask')), xp=jnp)

  def target_spans(prefix):
    spans = batch[f'{prefix}response_span']
    before = jnp.full((spans.shape[0], batch[f'{prefix}prompt'].shape[1] - 1), -1, spans.dtype)
    return jnp.concatenate([before, spans], axis=1)

  joined = {**join(''), **{k: batch[k] for k in logit_cache.TARGET_KEYS if k in batch}}
  if 'teacher_prompt' in batch:
    joined.update({f'teacher_{k}': v for k, v in join('teacher_').items()},
                  span=target_spans(''), teacher_span=target_spans('teacher_'))
  return joined


def _on_student_vocabulary(out, vocab_map: np.ndarray | None):
  """A teacher's ``(logits, features)`` with its logits on the student's labels."""
  if vocab_map is None:
    return out
  return vocabulary.remap_logits(out[0], vocab_map), out[1]


def train_step(state: state_lib.DistillState, teacher_variables: Any, batch: base.Batch, *,
               student: Llama, teacher: Llama | None, method: Method,
               optimizer: optax.GradientTransformation, schedule, fused: bool = False,
               mesh: Any = None, rules: Sequence[tuple[str, Any]] = (),
               batch_axes: tuple[str, ...] | None = None,
               reduce_in_order: bool = False, vocab_map: np.ndarray | None = None
               ) -> tuple[state_lib.DistillState, dict[str, jax.Array]]:
  """One update of the student on a batch of examples (``data.text`` layout).

  Args:
    state: the student state (donated by the caller).
    teacher_variables: the teacher's ``{'params': ...}`` (unused when
      ``teacher`` is None).
    batch: ``prompt`` int32 / ``prompt_mask`` bool ``[B, P]``, ``response`` /
      ``response_mask`` ``[B, R]``, ``index`` ``[B]``; with a logit cache also
      ``target_ids`` / ``target_logprobs`` ``[B, P + R - 1, k]`` and
      ``tail_logprob`` ``[B, P + R - 1]``.
    teacher: the teacher model, or None when the method needs none.
    fused: hand the method both models' logits as ``LinearLogits`` (never
      ``[B, T, V]``; ``uses_fused_logits``).
    mesh, rules: under jit on several devices, the mesh and
      ``config.sharding.rules``: the fused losses run in ``shard_map`` over
      ``mesh`` (rows over the batch axes, ``V`` over ``'tensor'``) and the
      models' activations are constrained by ``rules``; ``mesh`` is None
      inside ``shard_map`` (``batch_axes``) and on one device.
    batch_axes, reduce_in_order: as ``steps.update`` (inside ``jax.shard_map``).
    vocab_map: the teacher label of each student label (``StudentStart``):
      the teacher's logits are taken onto the student's vocabulary.
  """
  batch = lm_batch(batch)
  forward = functools.partial(_forward, batch=batch, fused=fused, mesh=mesh, rules=rules)
  student_features, teacher_features = (), ()
  teacher_out = None
  if teacher is not None:
    student_features, teacher_features = method.attention_features(
        student.config.num_layers, teacher.config.num_layers)
    teacher_out = jax.lax.stop_gradient(forward(
        teacher, teacher_variables, prefix='teacher_' if 'teacher_inputs' in batch else '',
        attention_features=teacher_features))
    teacher_out = _on_student_vocabulary(teacher_out, vocab_map)
  # Token methods average over this batch's distilled tokens. Inside shard_map
  # each shard's mean is weighted by its share of the tokens, so that the mean
  # over shards is the mean over all tokens (shards hold different counts with
  # padded or EOS-stopped responses); 1 under jit.
  weight = 1.0
  if batch_axes:
    count = jnp.sum(batch['loss_mask'])
    weight = count / jnp.maximum(jax.lax.pmean(count, batch_axes), 1e-9)

  def loss_fn(trainable):
    out = forward(student, {'params': trainable['student']}, attention_features=student_features)
    loss, metrics, method_state = method.loss_with_state(
        out, teacher_out, batch, trainable['aux'], state.step, state.method_state)
    metrics = {k: v * weight for k, v in metrics.items()}
    return loss * weight, (state.model_state, method_state, metrics)

  return steps.update(state, loss_fn, optimizer=optimizer, schedule=schedule,
                      batch_axes=batch_axes, reduce_in_order=reduce_in_order)


def eval_step(state: state_lib.DistillState, teacher_variables: Any, batch: base.Batch, *,
              student: Llama, teacher: Llama | None, mesh: Any = None,
              rules: Sequence[tuple[str, Any]] = (),
              vocab_map: np.ndarray | None = None) -> dict[str, jax.Array]:
  """Sums over the real (``mask``) examples' response tokens: ``count``, ``nll``,
  ``chars`` (the characters they spell), and with a teacher ``teacher_nll``,
  ``agreement`` (same argmax) and ``kl`` (KL(t || s), T=1); a teacher with its
  own tokenizer gives ``teacher_count`` and ``teacher_nll`` over its tokens of
  the same text instead (``metrics.eval_summary`` turns them into means,
  perplexities and bits per character). ``mesh``, ``rules``, ``vocab_map``: as
  ``train_step``."""
  joined = lm_batch(batch)
  mask = joined['loss_mask'] * batch['mask'][:, None].astype(jnp.float32)
  forward = functools.partial(_forward, batch=joined, mesh=mesh, rules=rules)
  logits = forward(student, state.student_variables)[0]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, joined['targets'])
  sums = {'count': mask.sum(), 'nll': jnp.sum(mask * nll),
          'chars': jnp.sum(batch['response_chars'] * batch['mask'])}
  if teacher is not None and 'teacher_inputs' in joined:  # Its own tokens: compare per character.
    t_logits = forward(teacher, teacher_variables, prefix='teacher_')[0]
    t_mask = joined['teacher_loss_mask'] * batch['mask'][:, None].astype(jnp.float32)
    t_nll = optax.softmax_cross_entropy_with_integer_labels(t_logits, joined['teacher_targets'])
    sums.update(teacher_count=t_mask.sum(), teacher_nll=jnp.sum(t_mask * t_nll))
  elif teacher is not None:
    t_logits = _on_student_vocabulary(forward(teacher, teacher_variables), vocab_map)[0]
    t_nll = optax.softmax_cross_entropy_with_integer_labels(t_logits, joined['targets'])
    same = jnp.argmax(logits, -1) == jnp.argmax(t_logits, -1)
    sums.update(teacher_nll=jnp.sum(mask * t_nll), agreement=jnp.sum(mask * same),
                kl=jnp.sum(mask * kl_divergence(logits, t_logits)))
  return sums


@dataclasses.dataclass(frozen=True)
class OnPolicy:
  """On-policy distillation (GKD, Agarwal et al. 2024).

  With probability ``lam`` a batch's responses are replaced by the student's
  own samples for the same prompts (drawn outside the compiled step), which
  the teacher then scores token by token through the method's divergence.
  The coin and the sampling key depend on ``(seed, step)`` only, so a
  resumed run draws the same. ``lam = 0`` is supervised KD.
  """
  lam: float
  sampling: SamplingParams
  eos_id: int | None
  pad_id: int
  seed: int = 0

  def prepare(self, student: Llama, place: Any, state: Any, batch: base.Batch,
              step: int) -> tuple[base.Batch, dict[str, float]]:
    """``batch`` of loop step ``step`` (1-based) with the student's samples as
    responses (probability ``lam``), placed in the batch sharding by ``place``."""
    draw = step - 1
    generated = bool(np.random.default_rng([self.seed, draw]).random() < self.lam)
    if generated:
      out = generate(student, state.student_variables, batch['prompt'], batch['prompt_mask'],
                     jax.random.fold_in(jax.random.PRNGKey(self.seed), draw), self.sampling,
                     eos_id=self.eos_id, pad_id=self.pad_id)
      batch = {**batch, 'response': place(out.tokens), 'response_mask': place(out.mask)}
    return batch, {'on_policy': float(generated)}


def example_sources(config: ml_collections.ConfigDict, tokenizer: Tokenizer,
                    student_tokenizer: Tokenizer | None = None) -> tuple[Any, Any]:
  """``(train, eval)`` example sources; eval is a fixed random subset of held-out
  windows. With ``student_tokenizer``, windows tokenized by both and aligned."""
  d = config.data
  if student_tokenizer is not None:
    train, held = text.aligned_shakespeare(
        student_tokenizer.encode_with_offsets, tokenizer.encode_with_offsets,
        held_out=d.held_out, plays=d.plays, prompt_len=d.prompt_len,
        response_len=d.response_len, **student_lengths(config))
    count = len(held['prompt'])
    if count < d.eval_windows:
      raise ValueError(f'The held-out plays {list(d.held_out)} give {count} aligned windows, '
                       f'fewer than data.eval_windows={d.eval_windows}.')
    pick = np.random.default_rng(0).permutation(count)[:d.eval_windows]
    return (text.ArrayExamples(train),
            text.ArrayExamples({k: v[pick] for k, v in held.items()}))
  width = d.prompt_len + d.response_len
  train_windows, held = text.shakespeare_windows(tokenizer.encode, width,
                                                 held_out=d.held_out, plays=d.plays)
  if len(held) < d.eval_windows:
    raise ValueError(f'The held-out plays {list(d.held_out)} give {len(held)} windows, '
                     f'fewer than data.eval_windows={d.eval_windows}.')
  held = held[np.random.default_rng(0).permutation(len(held))[:d.eval_windows]]
  held_examples = text.split_windows(held, d.prompt_len)
  # Characters of each decoded response: bits per character compare across tokenizers.
  held_examples['response_chars'] = np.asarray(
      [len(tokenizer.decode(r)) for r in held_examples['response']], np.int32)
  eval_source = text.ArrayExamples(held_examples)
  if d.name == 'shakespeare':
    return text.ArrayExamples(text.split_windows(train_windows, d.prompt_len)), eval_source
  if d.name == 'logit_cache':
    cache = logit_cache.LogitCache(d.data_dir, tokenizer=logit_cache.tokenizer_info(tokenizer))
    source = logit_cache.CachedExamples(cache, prompt_len=d.prompt_len)
    if source.sequence_length != width:
      raise ValueError(f'{d.data_dir} holds sequences of {source.sequence_length} tokens; '
                       f'data.prompt_len + data.response_len = {width}.')
    return source, eval_source
  examples, _ = text.seqkd_examples(d.data_dir, d.seqkd_name, prompt_len=d.prompt_len,
                                    response_len=d.response_len, pad_id=tokenizer.pad_id)
  return text.ArrayExamples(examples), eval_source


def student_lengths(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The student's prompt and response lengths in its own tokens (cross-tokenizer runs)."""
  d = config.data
  return {'student_prompt_len': d.student_prompt_len or d.prompt_len,
          'student_response_len': d.student_response_len or d.response_len}


def batch_shapes(source: Any, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The global train batch's shapes: ``source.get`` rows, ``batch_size`` of them, + index."""
  row = {**source.get(np.zeros((1,), np.int64)), 'index': np.zeros((1,), np.int32)}
  return {k: jax.ShapeDtypeStruct((batch_size, *v.shape[1:]), v.dtype) for k, v in row.items()}


def load_teacher(config: ml_collections.ConfigDict, mesh: Any
                 ) -> tuple[str, Llama, dict[str, Any]]:
  """``(path, model, variables)`` of ``teacher.pretrained``, read into its shardings."""
  try:
    path = weights.resolve_pretrained(config.teacher.pretrained)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'teacher.pretrained: {e}') from e
  scan = config.teacher.scan_layers
  model_config = dataclasses.replace(weights.pretrained_config(path), scan_layers=scan)
  rules = config.sharding.teacher_rules or config.sharding.rules
  dtype = jnp.dtype(config.teacher.dtype)
  _, variables = weights.load_pretrained(
      path, dtype=dtype, shardings=weights.param_shardings(model_config, mesh, rules),
      scan_layers=scan)
  return path, Llama(model_config, dtype=dtype), variables


def compile_lm(config: ml_collections.ConfigDict, mesh: Any, *, student: Llama,
               teacher: Llama, teacher_variables: Any, method: Method, schedule: Any,
               abstract_batch: dict[str, jax.ShapeDtypeStruct], num_train: int = 0,
               teacher_name: str = 'teacher',
               vocab_map: np.ndarray | None = None,
               teacher_sources: tuple[TeacherSource, ...] = ()) -> compile_lib.Compiled:
  """The LM train/eval steps of ``student`` and ``teacher``, through ``compile.compile_steps``.

  Args:
    config: the run's config (``optim``, ``sharding``, ``scheme``, ``method``).
    mesh: the device mesh.
    student, teacher: the two Llamas (same vocabulary).
    teacher_variables: the teacher's ``{'params': ...}``, placed in their
      shardings (arrays, or ``jax.ShapeDtypeStruct`` to compile only).
    method: a token-level method; the train step runs the teacher only when
      ``method.needs_teacher``.
    schedule: step -> learning rate (``optim.make_schedule``).
    abstract_batch: the global example batch's shapes (``batch_shapes``).
    num_train: training examples (sizes per-example method state).
    teacher_name: names the teacher in error messages.
    vocab_map: ``StudentStart.vocab_map`` (the step then forms the logits).
    teacher_sources: where the teacher came from (``Compiled.teacher_sources``).
  """
  optimizer = optim.make_optimizer(config.optim, schedule)
  layout = {'mesh': mesh if config.sharding.mode == 'auto' and mesh.size > 1 else None,
            'rules': config.sharding.rules}
  def sample(prefix=''):
    length = sum(abstract_batch[f'{prefix}{k}'].shape[1] for k in ('prompt', 'response'))
    return jnp.zeros((1, length - 1), jnp.int32)

  teacher_sample = sample('teacher_' if 'teacher_prompt' in abstract_batch else '')
  teacher_features = jax.eval_shape(lambda v: teacher.apply(v, teacher_sample),
                                    teacher_variables)[1]
  boxed_init = functools.partial(
      state_lib.init_boxed_state, student=student, method=method, optimizer=optimizer,
      sample_images=sample(), teacher_features=teacher_features, num_train=num_train)
  return compile_lib.compile_steps(
      config, mesh, boxed_init=boxed_init,
      train_step=functools.partial(
          train_step, student=student, teacher=teacher if method.needs_teacher else None,
          method=method, optimizer=optimizer, schedule=schedule,
          fused=uses_fused_logits(config, method) and vocab_map is None, vocab_map=vocab_map,
          **layout),
      eval_step=functools.partial(eval_step, student=student, teacher=teacher,
                                  vocab_map=vocab_map, **layout),
      teacher_variables=teacher_variables, abstract_batch=abstract_batch,
      model_names={'student': 'llama', 'teacher': teacher_name},
      teacher_sources=teacher_sources)


def build(config: ml_collections.ConfigDict, devices=None) -> base.Experiment:
  """Checks ``config`` and builds the teacher, data, state layout and compiled steps."""
  check(config)
  method = methods.from_config(config.method)
  base.check_method_task(config, method)
  compile_lib.check_sharding_mode(config)
  mesh = base.make_mesh(config, devices)
  path, teacher, teacher_variables = load_teacher(config, mesh)
  tokenizer = load_tokenizer(path)
  student_tokenizer, tokenizer_note = None, ''
  if config.student.tokenizer:
    try:
      student_tokenizer = load_tokenizer(resolve_tokenizer(config.student.tokenizer))
    except FileNotFoundError as e:
      raise FileNotFoundError(f'student.tokenizer: {e}') from e
    tokenizer_note = (f', its own tokenizer {config.student.tokenizer} '
                      f'({student_tokenizer.vocab_size:,} tokens, spans aligned by character')
    if hasattr(method, 'matched_student_ids'):
      ours, theirs = vocabulary.matched_tokens(student_tokenizer, tokenizer)
      method = dataclasses.replace(method, matched_student_ids=tuple(ours.tolist()),
                                   matched_teacher_ids=tuple(theirs.tolist()))
      tokenizer_note += f'; {len(ours):,} tokens spelled alike in both'
    tokenizer_note += ')'
  train_source, eval_source = example_sources(config, tokenizer, student_tokenizer)
  size, num_train = config.train.batch_size, len(train_source)

  def train_batches(start_step: int):
    return pipeline.train_batches_of(
        train_source, global_batch_size=size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())

  start = initial_student(
      config, teacher, teacher_variables, tokenizer,
      calibration=lambda: itertools.islice(train_batches(0), config.student.calibration_batches),
      batch_sharding=sharding.batch_sharding(mesh),
      vocab_size=student_tokenizer.vocab_size if student_tokenizer else None)
  if start.vocab_map is not None and config.train.lm_logits == 'fused':
    raise ValueError('train.lm_logits=fused: the teacher\'s logits are mapped onto the '
                     'student\'s vocabulary, which the fused kernels cannot; use auto.')
  student = Llama(start.config, dtype=jnp.dtype(config.student.dtype))
  length = config.data.prompt_len + config.data.response_len
  lengths = 'data.prompt_len + data.response_len'
  student_length, student_lengths_name = length, lengths
  if student_tokenizer:
    student_length = sum(student_lengths(config).values())
    student_lengths_name = 'data.student_prompt_len + data.student_response_len'
  for name, model_config, tokens, what in (
      ('student', student.config, student_length, student_lengths_name),
      ('teacher', teacher.config, length, lengths)):
    if tokens > model_config.max_seq_len:
      raise ValueError(f'{what} = {tokens} tokens exceed the {name} context '
                       f'({model_config.max_seq_len}).')
  steps_per_epoch, total, schedule = base.schedule_steps(
      config, num_train, f'data.name={config.data.name!r}')
  compiled = compile_lm(config, mesh, student=student, teacher=teacher,
                        teacher_variables=teacher_variables, method=method, schedule=schedule,
                        abstract_batch=batch_shapes(train_source, size),
                        num_train=num_train, teacher_name=path, vocab_map=start.vocab_map,
                        teacher_sources=(TeacherSource(  # (Process 0 records it.)
                            os.path.abspath(path), vocab_size=teacher.config.vocab_size,
                            sha256=checksums.path_digest(path) if jax.process_index() == 0
                            else None),))
  if start.params_fn is not None:
    compiled = dataclasses.replace(compiled, init_fn=starting_from(compiled, start.params_fn))

  on_policy = None
  if config.on_policy.lam > 0:
    on_policy = OnPolicy(
        lam=config.on_policy.lam, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        seed=config.seed, sampling=SamplingParams(
            max_new_tokens=config.data.response_len, temperature=config.on_policy.temperature,
            top_k=config.on_policy.top_k, top_p=config.on_policy.top_p))

  def evaluate(state: Any, max_batches: int | None = None) -> dict[str, float]:
    local_batches = itertools.islice(pipeline.eval_batches_of(
        eval_source, global_batch_size=config.train.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()), max_batches)
    return metrics_lib.eval_summary(base.sum_over(
        local_batches, compiled.batch_sharding,
        lambda batch: compiled.eval_fn(state, compiled.teacher_variables, batch)),
        count_name='tokens')

  def progress(scalars: dict[str, float]) -> str:
    line = (f'loss {scalars["loss"]:.4f} ce {scalars["ce"]:.4f} '
            f'divergence {scalars.get("divergence", 0.0):.4f}')
    return line + (f' | on-policy share {scalars["on_policy"]:.2f}' if on_policy else '')

  description = (
      f'language_model: {path} -> llama student ({compiled.num_params:,} params, '
      f'{start.description}{tokenizer_note}), method '
      f'{config.method.name}' + (f', on-policy lam={on_policy.lam}' if on_policy else '') +
      f'; {num_train:,} training examples ({config.data.name}), {steps_per_epoch} '
      f'steps/epoch, {total} steps of {size}')

  def report(state: Any, summary: dict[str, float]) -> tuple[dict[str, Any], str]:
    models = {'teacher': (teacher, compiled.teacher_variables, tokenizer),
              'student': (student, state.student_variables, student_tokenizer or tokenizer)}
    result = report_lib.distillation_report(models, summary)
    return result, report_lib.markdown(result)

  if config.train.report and jax.process_count() > 1:
    description += '; train.report: the report runs on one process only, none is written'
  return base.Experiment(
      config=config, mesh=mesh, compiled=compiled, steps_per_epoch=steps_per_epoch,
      total_steps=total, description=description,
      train_batches=train_batches, evaluate=evaluate, progress=progress,
      items_per_step=(size * (student_length - 1), 'tokens'),
      prepare=(functools.partial(on_policy.prepare, student,
                                 compile_lib.placer(compiled.batch_sharding))
               if on_policy else None),
      report=report if config.train.report and jax.process_count() == 1 else None)
