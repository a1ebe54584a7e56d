"""The distill_jax ("ours") side of ``benchmarks.run``: the framework's own steps.

Nothing here re-implements a step. The vision KD step is ``exp.train_fn`` of
``distill_jax.train.build(config)`` for ``configs/cifar100/crd.py``'s
``pair=resnet32x4_resnet8x4,method=kd`` (RepDistiller's recipe: SGD momentum
0.9, weight decay 5e-4, random crop + flip inside the step, T = 4,
alpha = 0.1), fed by the framework's own input pipeline; the teacher comes
from a teacher run's checkpoint written by the framework (an initialised, not
a trained, resnet32x4: speed does not depend on the weights). The LM KD step
is ``distill_jax.tasks.language_model.compile_lm(...).train_fn`` (what an LM
run's build compiles) with the ``token_kl`` method. Both are compiled ahead of
time by the framework's one compile path, so that XLA's ``cost_analysis()`` /
``memory_analysis()`` come from the very executable that is timed; trace,
lowering and compile seconds come from the same call (or from JAX's own
compile-duration events, ``jax.monitoring``, when the framework compiled).
"""

import contextlib
import dataclasses
import os
import tempfile
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import checkpoint
from distill_jax import config_args
from distill_jax import defaults
from distill_jax import methods
from distill_jax import optim
from distill_jax import sharding
from distill_jax import train
from distill_jax.tasks import language_model
from distill_jax.llm.model import Llama, LlamaConfig


@dataclasses.dataclass
class CompiledStep:
  """An AOT-compiled train step and everything needed to call it repeatedly."""
  step: Callable[[], None]        # one update; blocks until it is done
  trace_lower_s: float            # jit trace + lowering to StableHLO
  compile_s: float                # XLA compilation
  flops: float                    # cost_analysis()['flops'] of one step
  bytes_accessed: float           # cost_analysis()['bytes accessed']
  temp_bytes: int                 # memory_analysis().temp_size_in_bytes
  num_params: dict[str, int]      # student / teacher parameter counts
  info: dict[str, Any]
  hlo_text: str = ''              # the compiled (optimized) HLO


_EVENTS: list[tuple[str, float, str]] | None = None


def _on_duration(event: str, seconds: float, **kwargs) -> None:
  if _EVENTS is not None:
    _EVENTS.append((event, seconds, str(kwargs.get('fun_name', ''))))


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def compile_events():
  """Collects JAX's (event, seconds, function name) compile-duration events."""
  global _EVENTS
  _EVENTS = events = []
  try:
    yield events
  finally:
    _EVENTS = None


def _step_compile_times(events, name: str) -> tuple[float, float]:
  """(trace + lowering, XLA compile) seconds of the jitted function ``name``."""
  def seconds(event):
    mine = [t for e, t, f in events if e == event and name in f]
    return max(mine or [t for e, t, _ in events if e == event] or [0.0])
  return (seconds('/jax/core/compile/jaxpr_trace_duration') +
          seconds('/jax/core/compile/jaxpr_to_mlir_module_duration'),
          seconds('/jax/core/compile/backend_compile_duration'))


def _cost(compiled) -> tuple[float, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax returned one dict per device.
    cost = cost[0]
  return float(cost.get('flops', 0.0)), float(cost.get('bytes accessed', 0.0))


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _check_donation(step: Callable[[], None], holder: dict[str, Any]) -> bool:
  """Runs ``step`` once; True when the old state's buffers were donated (deleted)."""
  old = jax.tree.leaves(holder['state'])
  step()
  return all(x.is_deleted() for x in old if isinstance(x, jax.Array))


def _params_count(tree) -> int:
  """Parameters in ``tree``: the leaves under a ``params`` key (all of them if none)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  under = [x for path, x in leaves
           if any(getattr(k, 'key', getattr(k, 'name', None)) == 'params' for k in path)]
  return _count(under if under else [x for _, x in leaves])


def _timed_step(compiled, state, teacher_variables, batch, *, trace_s: float,
                compile_s: float, info: dict[str, Any]) -> CompiledStep:
  """Wraps an AOT-compiled ``(state, teacher_variables, batch)`` step for timing.

  The closure threads the (donated) state through calls and waits for the new
  state and loss; ``info`` gains ``donated_state``.
  """
  holder = {'state': state}

  def step():
    new_state, metrics = compiled(holder['state'], teacher_variables, batch)
    holder['state'] = new_state  # The old state was donated.
    jax.block_until_ready(metrics['loss'])
    jax.block_until_ready(new_state)

  flops, bytes_accessed = _cost(compiled)
  num_params = {'student': _params_count(state), 'teacher': _params_count(teacher_variables)}
  donated = _check_donation(step, holder)
  return CompiledStep(
      step=step, trace_lower_s=trace_s, compile_s=compile_s, flops=flops,
      bytes_accessed=bytes_accessed,
      temp_bytes=int(compiled.memory_analysis().temp_size_in_bytes),
      hlo_text=compiled.as_text(), num_params=num_params,
      info={**info, 'donated_state': donated})


CRD_CONFIG = os.path.join(os.path.dirname(__file__), '..', 'configs', 'cifar100', 'crd.py')


CRD_PAIR = 'resnet32x4_resnet8x4'


def _crd_config(arg: str, *, model: str, batch_size: int, data_dir: str,
                dtype: str) -> ml_collections.ConfigDict:
  """``configs/cifar100/crd.py:pair=resnet32x4_resnet8x4,<arg>`` with ``model`` trained."""
  config = config_args.load_config_file(CRD_CONFIG, f'pair={CRD_PAIR},{arg}')
  config.student.model = model
  config.student.dtype = dtype
  config.data.data_dir = data_dir
  config.train.batch_size = batch_size
  config.train.eval_batch_size = batch_size
  return config


def _write_teacher_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A teacher run directory as ``train.run`` leaves it: config.json + a checkpoint."""
  state = train.build(config).compiled.init_fn(jax.random.PRNGKey(1))
  os.makedirs(workdir, exist_ok=True)
  checkpoint.write_config(workdir, config)
  manager = checkpoint.make_manager(workdir, 1)
  checkpoint.save(manager, state)
  manager.wait_until_finished()
  manager.close()


def vision_step(*, teacher: str = 'resnet32x4', student: str = 'resnet8x4',
                batch_size: int = 64, dtype: str = 'float32',
                workdir: str | None = None) -> CompiledStep:
  """The framework's KD train step on (synthetic) CIFAR-100.

  The config is the CRD table's resnet32x4 -> resnet8x4 KD cell; ``teacher``
  and ``student`` replace its models (any registered CIFAR models; the
  defaults are the cell's own), e.g. for small test shapes.
  """
  from distill_jax.data import testing  # pylint: disable=g-import-not-at-top
  workdir = workdir or tempfile.mkdtemp(prefix='distill_bench_')
  data_dir = os.path.join(workdir, 'tfds')
  # CIFAR-100 is not downloadable here: the standard tfds layout with random
  # pixels (the pipeline reads it like the real data set).
  if not os.path.isdir(os.path.join(data_dir, 'cifar100')):
    testing.write_fake_tfds_data('cifar100', data_dir,
                                 {'train': batch_size, 'test': batch_size})
  teacher_dir = os.path.join(workdir, f'teacher_{teacher}_{dtype}')
  if not os.path.isdir(os.path.join(teacher_dir, 'checkpoints')):
    _write_teacher_run(_crd_config('role=teacher', model=teacher, batch_size=batch_size,
                                   data_dir=data_dir, dtype=dtype), teacher_dir)
  config = _crd_config(f'method=kd,teacher_workdir={teacher_dir}', model=student,
                       batch_size=batch_size, data_dir=data_dir, dtype=dtype)
  config.teacher.dtype = dtype
  config.teacher.allow_unfinished = True  # A teacher at its random init (timing only).
  with compile_events() as events:
    build_start = time.perf_counter()
    exp = train.build(config)
    build_s = time.perf_counter() - build_start
  compiled = exp.compiled
  state = compiled.init_fn(jax.random.PRNGKey(0))
  batch = train.global_batch(next(exp.train_batches(0)), compiled.batch_sharding)
  trace_s, compile_s = _step_compile_times(events, 'train_step')  # train.build compiled it.
  return _timed_step(
      compiled.train_fn, state, compiled.teacher_variables, batch, trace_s=trace_s,
      compile_s=compile_s,
      info={'config': f'configs/cifar100/crd.py:pair={CRD_PAIR},method=kd',
            'teacher': teacher, 'student': student,
            'method': config.method.to_dict(), 'batch_size': batch_size,
            'dtype': dtype, 'optimizer': config.optim.name,
            'devices': len(exp.mesh.devices.flat),
            'build_s': build_s})


@dataclasses.dataclass(frozen=True)
class LMShapes:
  """Teacher/student decoder shapes of the LM KD benchmark."""
  vocab_size: int = 32768
  seq_len: int = 256
  batch_size: int = 8
  teacher_layers: int = 8
  teacher_hidden: int = 512
  teacher_ffn: int = 1536
  teacher_heads: int = 8
  teacher_kv_heads: int = 4
  student_layers: int = 4
  student_hidden: int = 256
  student_ffn: int = 768
  student_heads: int = 4
  student_kv_heads: int = 2
  prompt_len: int = 32

  def llama_kwargs(self, role: str) -> dict[str, Any]:
    g = lambda k: getattr(self, f'{role}_{k}')
    return dict(vocab_size=self.vocab_size, hidden_size=g('hidden'),
                intermediate_size=g('ffn'), num_layers=g('layers'),
                num_heads=g('heads'), num_kv_heads=g('kv_heads'),
                max_seq_len=max(2048, self.seq_len))

  def config(self, role: str) -> LlamaConfig:
    return LlamaConfig(**self.llama_kwargs(role))

  def batch_arrays(self, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of examples (``data.text`` layout): ``seq_len`` inputs, the last
    ``seq_len - prompt_len + 1`` distilled."""
    rng = np.random.default_rng(seed)
    total = self.seq_len + 1
    tokens = rng.integers(0, self.vocab_size, (self.batch_size, total), dtype=np.int32)
    p = self.prompt_len
    ones = lambda n: np.ones((self.batch_size, n), bool)
    return {'prompt': tokens[:, :p], 'prompt_mask': ones(p), 'response': tokens[:, p:],
            'response_mask': ones(total - p),
            'index': np.arange(self.batch_size, dtype=np.int32)}


# Named LMShapes overrides ('' = the CPU benchmark's shapes).
LM_PRESETS = {
    '': {},
    # SmolLM2-135M's architecture (30 x 576, FFN 1536, 9 heads / 3 KV heads,
    # vocabulary 49,152) -> experiments/smollm2_distill.py's 4 x 256 student,
    # 16 sequences of 2048 tokens: the accelerator check's LLM pair.
    'smollm2_135m': dict(vocab_size=49152, seq_len=2048, batch_size=16, teacher_layers=30,
                         teacher_hidden=576, teacher_ffn=1536, teacher_heads=9,
                         teacher_kv_heads=3, student_layers=4, student_hidden=256,
                         student_ffn=768, student_heads=4, student_kv_heads=2,
                         prompt_len=128),
    # SmolLM2-135M's architecture -> a 16 x 384 student (43M parameters, a third
    # of the teacher's), 8 sequences of 512 tokens: the fused-loss comparison.
    'smollm2_kd': dict(vocab_size=49152, seq_len=512, batch_size=8, teacher_layers=30,
                       teacher_hidden=576, teacher_ffn=1536, teacher_heads=9,
                       teacher_kv_heads=3, student_layers=16, student_hidden=384,
                       student_ffn=1024, student_heads=6, student_kv_heads=2,
                       prompt_len=32),
}


def lm_model_flops(shapes: LMShapes) -> dict[str, float]:
  """Analytic matmul FLOPs of one KD step (2 per MAC; causal attention in full).

  ``teacher_forward`` is 2 * tokens * (non-embedding matmul params + head) +
  attention; ``student_train`` is 3x its forward (forward + backward).
  """
  tokens = shapes.batch_size * shapes.seq_len

  def forward(role):
    c = shapes.config(role)
    proj = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    attn = 2 * shapes.seq_len * c.num_heads * c.head_dim
    return 2 * tokens * (c.num_layers * (proj + mlp + attn) + c.hidden_size * c.vocab_size)

  t, s = forward('teacher'), forward('student')
  return {'teacher_forward': float(t), 'student_train': float(3 * s),
          'total': float(t + 3 * s)}


def lm_step(shapes: LMShapes = LMShapes(), *, dtype: str = 'float32',
            learning_rate: float = 1e-4, lm_logits: str = 'auto', scan_layers: bool = False,
            remat: str = 'none') -> CompiledStep:
  """The framework's token-level KD step (``token_kl``, AdamW) on random tokens;
  ``lm_logits`` is ``train.lm_logits`` (auto = the fused loss), ``scan_layers``
  applies to both models, ``remat`` to the student (``LlamaConfig``)."""
  compute = jnp.dtype(dtype)
  teacher = Llama(dataclasses.replace(shapes.config('teacher'), scan_layers=scan_layers),
                  dtype=compute)
  student = Llama(dataclasses.replace(shapes.config('student'), scan_layers=scan_layers,
                                      remat=remat), dtype=compute)
  sample = jnp.zeros((1, shapes.seq_len), jnp.int32)
  teacher_variables = jax.jit(lambda k: nn.unbox(teacher.init(k, sample)))(
      jax.random.PRNGKey(1))
  config = defaults.default_config('language_model')
  config.optim.update(name='adamw', learning_rate=learning_rate, weight_decay=0.0,
                      schedule='constant', warmup_steps=0, grad_clip_norm=0.0)
  config.train.lm_logits = lm_logits
  mesh = sharding.make_mesh(config.mesh)
  teacher_variables = jax.device_put(teacher_variables, sharding.replicated(mesh))
  arrays = shapes.batch_arrays()
  with compile_events() as events:
    compiled = language_model.compile_lm(
        config, mesh, student=student, teacher=teacher, teacher_variables=teacher_variables,
        method=methods.from_config(ml_collections.ConfigDict({'name': 'token_kl'})),
        schedule=optim.make_schedule(config.optim, steps_per_epoch=1, total_steps=1000),
        abstract_batch={k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in arrays.items()})
  state = compiled.init_fn(jax.random.PRNGKey(0))
  batch = jax.device_put(arrays, compiled.batch_sharding)
  trace_s, compile_s = _step_compile_times(events, 'train_step')
  return _timed_step(
      compiled.train_fn, state, compiled.teacher_variables, batch, trace_s=trace_s,
      compile_s=compile_s,
      info={'method': 'token_kl', 'optimizer': 'adamw', 'dtype': dtype, 'lm_logits': lm_logits,
            'scan_layers': scan_layers, 'remat': remat,
            'analytic_flops': lm_model_flops(shapes),
            'shapes': dataclasses.asdict(shapes)})


def matmul_peak(n: int = 2048, dtype: str = 'float32') -> Callable[[], None]:
  """One ``n x n @ n x n`` product (2 n^3 FLOPs) in XLA, blocking."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
  f = jax.jit(lambda x: x @ x).lower(a).compile()
  return lambda: jax.block_until_ready(f(a))
