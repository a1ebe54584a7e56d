"""Language-model distillation: batches, the pure LM train/eval steps, and the loop.

Examples are (prompt, response) pairs of token ids: ``prompt`` ``[B, P]``
left-padded, ``response`` ``[B, R]`` right-padded, with bool masks. Plain text
is split the same way (a short prefix as the prompt). ``make_lm_batch`` joins
them into the model's inputs and next-token targets; only response tokens are
distilled (``loss_mask``). The same layout carries supervised data,
teacher-generated responses (sequence-level KD) and student-generated ones
(on-policy GKD: ``OnPolicy``), so every token-level method serves all three.

The steps follow DESIGN rule 1 (pure, compiled once with explicit shardings,
state donated, ``fold_in(rng, step)``) and reuse ``state.DistillState`` and
``state.init_boxed_state``.
"""

import dataclasses
import functools
from typing import Any, Iterable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill_jax import metrics as metrics_lib
from distill_jax import optim
from distill_jax import sharding
from distill_jax import state as state_lib
from distill_jax import steps
from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams, generate
from distill_jax.losses import kl_divergence
from distill_jax.methods.base import Method

Batch = dict[str, Any]


def make_lm_batch(prompt, prompt_mask, response, response_mask) -> Batch:
  """Joins prompts ``[B, P]`` and responses ``[B, R]`` into a training batch.

  Returns ``inputs`` int32 ``[B, P + R - 1]``, ``targets`` (the next tokens),
  ``token_mask`` (False at padding of the inputs) and ``loss_mask`` float32
  (1 where the target is a response token).
  """
  tokens = jnp.concatenate([jnp.asarray(prompt), jnp.asarray(response)], axis=1)
  valid = jnp.concatenate([jnp.asarray(prompt_mask), jnp.asarray(response_mask)], axis=1)
  is_response = jnp.concatenate(
      [jnp.zeros_like(jnp.asarray(prompt_mask)), jnp.asarray(response_mask)], axis=1)
  return {
      'inputs': tokens[:, :-1].astype(jnp.int32),
      'targets': tokens[:, 1:].astype(jnp.int32),
      'token_mask': valid[:, :-1].astype(jnp.bool_),
      'loss_mask': is_response[:, 1:].astype(jnp.float32),
  }


def _forward(model: Llama, variables: Any, batch: Batch):
  return model.apply(variables, batch['inputs'], token_mask=batch['token_mask'])


def lm_train_step(state: state_lib.DistillState, teacher_variables: Any, batch: Batch, *,
                  student: Llama, teacher: Llama | None, method: Method,
                  optimizer: optax.GradientTransformation, schedule
                  ) -> tuple[state_lib.DistillState, dict[str, jax.Array]]:
  """One update of the student on a ``make_lm_batch`` batch."""
  teacher_out = (None if teacher is None else
                 jax.lax.stop_gradient(_forward(teacher, teacher_variables, batch)))

  def loss_fn(trainable):
    out = _forward(student, {'params': trainable['student']}, batch)
    loss, metrics, method_state = method.loss_with_state(
        out, teacher_out, batch, trainable['aux'], state.step, state.method_state)
    return loss, (metrics, method_state)

  trainable = {'student': state.params, 'aux': state.aux_params}
  (loss, (metrics, method_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  grad_norm = optax.tree.norm(grads)
  finite = steps.is_finite_update(loss, grad_norm)   # A NaN/Inf step leaves the state as it was.
  new_state = steps.keep_if_finite(finite, steps.apply_gradients(
      state, grads, optimizer=optimizer, model_state=state.model_state,
      method_state=method_state), state)
  return new_state, {**metrics, 'loss': loss, 'grad_norm': grad_norm,
                     'nonfinite': 1.0 - finite.astype(jnp.float32),
                     'learning_rate': schedule(state.step)}


def lm_eval_step(student_variables: Any, teacher_variables: Any, batch: Batch, *,
                 student: Llama, teacher: Llama | None) -> dict[str, jax.Array]:
  """Sums over the ``loss_mask`` tokens: ``count``, ``nll``, and with a teacher
  ``teacher_nll``, ``agreement`` (same argmax) and ``kl`` (KL(t || s), T=1)."""
  mask = batch['loss_mask']
  logits = _forward(student, student_variables, batch)[0]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
  sums = {'count': mask.sum(), 'nll': jnp.sum(mask * nll)}
  if teacher is not None:
    t_logits = _forward(teacher, teacher_variables, batch)[0]
    t_nll = optax.softmax_cross_entropy_with_integer_labels(t_logits, batch['targets'])
    same = jnp.argmax(logits, -1) == jnp.argmax(t_logits, -1)
    sums.update(teacher_nll=jnp.sum(mask * t_nll), agreement=jnp.sum(mask * same),
                kl=jnp.sum(mask * kl_divergence(logits, t_logits)))
  return sums


def eval_summary(sums: dict[str, Any]) -> dict[str, float]:
  """Perplexity, next-token agreement and KL from summed eval metrics."""
  sums = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = sums['count']
  out = {'tokens': int(count), 'nll': sums['nll'] / count,
         'perplexity': float(np.exp(sums['nll'] / count))}
  if 'teacher_nll' in sums:
    out.update(teacher_perplexity=float(np.exp(sums['teacher_nll'] / count)),
               agreement=sums['agreement'] / count, kl=sums['kl'] / count)
  return out


@dataclasses.dataclass(frozen=True)
class OnPolicy:
  """On-policy distillation (GKD, Agarwal et al. 2024).

  With probability ``lam`` a batch's responses are replaced by the student's
  own samples for the same prompts (drawn outside the compiled step), which
  the teacher then scores token by token through the method's divergence.
  ``lam = 0`` is supervised KD.
  """
  lam: float
  sampling: SamplingParams
  eos_id: int | None
  pad_id: int
  seed: int = 0


@dataclasses.dataclass
class LMTrainer:
  """Compiled LM steps and their shardings (``build_trainer``)."""
  student: Llama
  teacher: Llama | None
  teacher_variables: Any
  method: Method
  mesh: Any
  batch_sharding: Any
  abstract_state: Any
  init_fn: Any
  train_fn: Any
  eval_fn: Any


def build_trainer(*, student: Llama, teacher: Llama | None, teacher_variables: Any,
                  method: Method, optim_config: ml_collections.ConfigDict,
                  total_steps: int, seq_len: int, rules=(), mesh=None) -> LMTrainer:
  """Builds the state layout and compiles the LM train/eval steps once."""
  mesh = mesh or sharding.make_mesh(ml_collections.ConfigDict(
      {'data': -1, 'fsdp': 1, 'tensor': 1}))
  if method.needs_teacher and teacher is None:
    raise ValueError(f'Method {type(method).__name__} needs a teacher.')
  sample = jnp.zeros((1, seq_len), jnp.int32)
  teacher_features = None
  if teacher is not None:
    if teacher.config.vocab_size != student.config.vocab_size:
      raise ValueError(
          f'Teacher and student vocabularies differ: the teacher has '
          f'{teacher.config.vocab_size} tokens and the student '
          f'{student.config.vocab_size}. Token-level distillation needs the same '
          'tokenizer; no truncation is done.')
    teacher_features = jax.eval_shape(lambda v: teacher.apply(v, sample),
                                      teacher_variables)[1]
  schedule = optim.make_schedule(optim_config, steps_per_epoch=1, total_steps=total_steps)
  optimizer = optim.make_optimizer(optim_config, schedule)
  boxed_init = functools.partial(
      state_lib.init_boxed_state, student=student, method=method, optimizer=optimizer,
      sample_images=sample, teacher_features=teacher_features, num_train=0)
  boxed_state = jax.eval_shape(boxed_init, jax.random.PRNGKey(0))
  state_shardings = sharding.logical_shardings(boxed_state, mesh, rules)
  replicated = sharding.replicated(mesh)
  data = sharding.batch_sharding(mesh)
  teacher_shardings = None
  if teacher is not None:
    # Keep a teacher already sharded on this mesh (``weights.param_shardings``);
    # replicate anything else over the mesh.
    on_mesh = lambda x: (isinstance(getattr(x, 'sharding', None), jax.sharding.NamedSharding)
                         and x.sharding.mesh == mesh)
    teacher_shardings = jax.tree.map(
        lambda x: x.sharding if on_mesh(x) else replicated, teacher_variables)
    teacher_variables = jax.device_put(teacher_variables, teacher_shardings)
  train_teacher = teacher if method.needs_teacher else None
  train_fn = jax.jit(
      functools.partial(lm_train_step, student=student, teacher=train_teacher,
                        method=method, optimizer=optimizer, schedule=schedule),
      in_shardings=(state_shardings, teacher_shardings, data),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  eval_fn = jax.jit(functools.partial(lm_eval_step, student=student, teacher=teacher),
                    out_shardings=replicated)
  init_fn = jax.jit(lambda rng: nn.unbox(boxed_init(rng)), out_shardings=state_shardings)
  return LMTrainer(student, teacher, teacher_variables, method, mesh, data,
                   sharding.with_shardings(boxed_state, state_shardings), init_fn,
                   train_fn, eval_fn)


def _on_policy_batch(trainer: LMTrainer, state, example: Batch, on_policy: OnPolicy,
                     step: int) -> Batch:
  out = generate(trainer.student, state.student_variables, example['prompt'],
                 example['prompt_mask'], jax.random.PRNGKey(on_policy.seed + step),
                 on_policy.sampling, eos_id=on_policy.eos_id, pad_id=on_policy.pad_id)
  return {**example, 'response': out.tokens, 'response_mask': out.mask}


def step_batch(trainer: LMTrainer, state, example: Batch, step: int,
               on_policy: OnPolicy | None) -> tuple[Batch, bool]:
  """The device batch of training step ``step`` (0-based) from ``example``
(prompt/response examples, or a ready ``make_lm_batch``-layout batch).

  With ``on_policy``, the responses are the student's samples with
  probability ``lam``; the coin and the sampling key depend on
  ``(on_policy.seed, step)`` only (a resumed run draws the same). Returns the
  ``make_lm_batch`` batch in the trainer's batch sharding and whether it was
  generated.
  """
  if 'inputs' in example:  # Already a training batch (a teacher-logit cache's).
    return jax.device_put(example, trainer.batch_sharding), False
  generated = bool(on_policy is not None and on_policy.lam > 0 and
                   np.random.default_rng([on_policy.seed, step]).random() < on_policy.lam)
  if generated:
    example = _on_policy_batch(trainer, state, example, on_policy, step)
  batch = make_lm_batch(example['prompt'], example['prompt_mask'], example['response'],
                        example['response_mask'])
  return jax.device_put(batch, trainer.batch_sharding), generated


def train(trainer: LMTrainer, state, examples: Iterator[Batch], num_steps: int, *,
          on_policy: OnPolicy | None = None, writer: metrics_lib.MetricWriter | None = None,
          log_every: int = 10) -> tuple[Any, list[dict[str, float]]]:
  """Runs ``num_steps`` updates on (prompt, response) examples, in memory.

  (``llm.run`` is the command-line loop with checkpoints and resumption.)
  Each element of ``examples`` holds ``prompt``, ``prompt_mask`` ``[B, P]``,
  ``response``, ``response_mask`` ``[B, R]``. With ``on_policy`` see
  ``step_batch``; the response length stays ``R = sampling.max_new_tokens``,
  so nothing recompiles. Returns the final state and the logged rows.
  """
  window, rows = [], []
  for step in range(num_steps):
    batch, generated = step_batch(trainer, state, next(examples), step, on_policy)
    state, metrics = trainer.train_fn(state, trainer.teacher_variables, batch)
    window.append({**metrics, 'on_policy': jnp.float32(generated)})
    if (step + 1) % log_every == 0 or step + 1 == num_steps:
      row = {'step': step + 1, **metrics_lib.mean_of(window)}
      rows.append(row)
      if writer is not None:
        writer.write(step + 1, {k: v for k, v in row.items() if k != 'step'})
      window = []
  return state, rows


def evaluate(trainer: LMTrainer, state, examples: Iterable[Batch]) -> dict[str, float]:
  """Held-out perplexity (and teacher figures) over ``examples``."""
  total = None
  for example in examples:
    batch = make_lm_batch(example['prompt'], example['prompt_mask'],
                          example['response'], example['response_mask'])
    total = metrics_lib.add_sums(total, trainer.eval_fn(
        state.student_variables, trainer.teacher_variables, batch))
  return eval_summary(total)
