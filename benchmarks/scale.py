"""Per-device memory and collectives of the distillation train step under DP, FSDP and FSDP+TP.

  python -m benchmarks.scale [--quick] [--pairs=vision,lm] [--devices=1,2,4,8]

Runs on 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``
and ``JAX_PLATFORMS=cpu`` are set here, before jax is imported, unless already
set). Nothing is trained: for every (pair, layout, device count) the train step
is compiled ahead of time on a mesh of the first ``n`` devices and we record

* per-device bytes of the student's params, its optimizer state and the
  teacher's variables, from their shardings (``sharding.bytes_per_device``);
* the compiled step's ``memory_analysis()``: argument, output, alias
  (donated) and temp bytes, per device;
* how many collectives of each kind (all-reduce, all-gather, reduce-scatter,
  collective-permute, all-to-all) the optimized HLO of the step holds, and the
  bytes of their results (``Compiled.as_text()``; counted statically, so an op
  inside a loop body counts once).

Pairs:

* ``vision``: resnet32x4 (teacher) -> resnet8x4 (student), CIFAR-100 shapes,
  batch 64, method ``kd``, SGD with momentum, built by ``train.build`` from
  ``configs/cifar100/crd.py`` on fake CIFAR-100 data with an initialised
  (untrained) teacher checkpoint in a temporary folder;
* ``lm``: a SmolLM2-135M-shaped teacher (V 49152, d 576, 30 layers, FFN 1536,
  9 heads / 3 KV heads, tied embeddings) -> the 4-layer d=256 student of
  ``experiments/smollm2_distill.py``, seq 128, batch 8, ``token_kl``, AdamW;
  the step is the LM task's, compiled by the one compile path
  (``compile.compile_steps``, as every run) from abstract
  (``jax.ShapeDtypeStruct``) state, teacher and batch: no weights are made.

Layouts (mesh ``data x fsdp x tensor``; the batch is split over ``data x fsdp``):

* ``dp``: ``n x 1 x 1``, everything replicated;
* ``fsdp``: ``1 x n x 1``, params (and so optimizer state) split over ``fsdp``;
* ``fsdp_tp``: ``1 x n/2 x 2``, params split over both axes (see ``LAYOUT_RULES``).

Writes ``benchmarks/results/scale.json`` and prints a markdown table, which also
replaces the generated part of the "Scaling" section of
``benchmarks/README.md`` (the section is appended the first time).
"""

import os

_COUNT_FLAG = '--xla_force_host_platform_device_count'
if _COUNT_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' {_COUNT_FLAG}=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import contextlib
import dataclasses
import functools
import json
import platform
import re
import sys
import tempfile
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import checkpoint
from distill_jax import compile as compile_lib
from distill_jax import config_args
from distill_jax import defaults
from distill_jax import methods
from distill_jax import optim
from distill_jax import registry
from distill_jax import sharding
from distill_jax import state as state_lib
from distill_jax import train
from distill_jax.data import testing
from distill_jax.tasks import language_model
from distill_jax.llm.model import Llama, LlamaConfig

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CRD_CONFIG = os.path.join(ROOT, 'configs', 'cifar100', 'crd.py')
RESULTS_JSON = os.path.join(ROOT, 'benchmarks', 'results', 'scale.json')
README = os.path.join(ROOT, 'benchmarks', 'README.md')
SECTION_TITLE = '## Scaling: per-device memory and collectives (`benchmarks/scale.py`)'
BEGIN, END = '<!-- scale.py table: begin -->', '<!-- scale.py table: end -->'

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
LAYOUTS = ('dp', 'fsdp', 'fsdp_tp')
TENSOR = 2  # Size of the mesh's tensor axis in the fsdp_tp layout (n >= 2).

# Logical axis -> mesh axis rules per (family, layout, role). Every rule must
# divide the shapes it shards; the comments say why some names stay replicated.
LAYOUT_RULES = {
    'vision': {
        'dp': {'student': (), 'teacher': ()},
        # The stem conv has 3 input channels, so 'conv_in' cannot be sharded
        # (not even over 2 devices); every conv is split on its output channels.
        'fsdp': {'student': (('conv_out', 'fsdp'), ('mlp', 'fsdp')),
                 'teacher': (('conv_out', 'fsdp'), ('mlp', 'fsdp'))},
        # Output channels split over both axes (tensor x fsdp), the classifier
        # as [mlp -> fsdp, classes -> tensor] (100 classes: divisible by 2).
        'fsdp_tp': {'student': (('conv_out', ('tensor', 'fsdp')), ('mlp', 'fsdp'),
                                ('classes', 'tensor')),
                    'teacher': (('conv_out', ('tensor', 'fsdp')), ('mlp', 'fsdp'),
                                ('classes', 'tensor'))},
    },
    'lm': {
        'dp': {'student': (), 'teacher': ()},
        'fsdp': {'student': (('embed', 'fsdp'),), 'teacher': (('embed', 'fsdp'),)},
        # The student's 4 heads / 2 KV heads split over tensor=2; the teacher's
        # 9 heads / 3 KV heads do not, so its attention is split over fsdp only.
        'fsdp_tp': {'student': (('embed', 'fsdp'), ('mlp', 'tensor'), ('vocab', 'tensor'),
                                ('heads', 'tensor'), ('kv_heads', 'tensor')),
                    'teacher': (('embed', 'fsdp'), ('mlp', 'tensor'), ('vocab', 'tensor'))},
    },
}


@dataclasses.dataclass(frozen=True)
class VisionPair:
  name: str
  teacher: str
  student: str
  batch_size: int
  method: str = 'kd'
  kind: str = 'vision'


@dataclasses.dataclass(frozen=True)
class LMPair:
  name: str
  teacher: LlamaConfig
  student: LlamaConfig
  seq_len: int
  batch_size: int
  method: str = 'token_kl'
  kind: str = 'lm'


SMOLLM2_135M = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                           num_layers=30, num_heads=9, num_kv_heads=3, rope_theta=100000.0,
                           tie_embeddings=True, max_seq_len=2048)
# The student of experiments/smollm2_distill.py (STUDENT there).
SMOLLM2_STUDENT = LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=768,
                              num_layers=4, num_heads=4, num_kv_heads=2, rope_theta=100000.0,
                              max_seq_len=2048)
PAIRS = {
    'vision': VisionPair('resnet32x4 -> resnet8x4', 'resnet32x4', 'resnet8x4', batch_size=64),
    'lm': LMPair('SmolLM2-135M -> 4L d256', SMOLLM2_135M, SMOLLM2_STUDENT, seq_len=128,
                 batch_size=8),
}
LM_OPTIM = {'name': 'adamw', 'learning_rate': 2e-3, 'weight_decay': 0.01,  # As the LM config.
            'schedule': 'cosine', 'warmup_steps': 10, 'grad_clip_norm': 1.0}
PROMPT_LEN = 16  # Prompt tokens of the LM pair's examples (not distilled).


def mesh_shape(layout: str, n: int) -> dict[str, int]:
  """``{'data', 'fsdp', 'tensor'}`` sizes of ``layout`` on ``n`` devices."""
  if layout == 'dp':
    return {'data': n, 'fsdp': 1, 'tensor': 1}
  if layout == 'fsdp':
    return {'data': 1, 'fsdp': n, 'tensor': 1}
  if layout == 'fsdp_tp':
    tensor = TENSOR if n % TENSOR == 0 else 1
    return {'data': 1, 'fsdp': n // tensor, 'tensor': tensor}
  raise ValueError(f'layout={layout!r}; choose one of {", ".join(LAYOUTS)}.')


def make_mesh(layout: str, n: int):
  return sharding.make_mesh(ml_collections.ConfigDict(mesh_shape(layout, n)),
                            devices=jax.devices()[:n])


_COLLECTIVE_RE = re.compile(
    r'=\s*(?P<type>.*?)\s(?P<op>' + '|'.join(COLLECTIVES) + r')(?:-start)?\(')
_ARRAY_RE = re.compile(r'\b(pred|[a-z]+\d+\w*)\[([\d,]*)\]')  # f32[8,128], bf16[], pred[4]


def collective_stats(hlo_text: str) -> tuple[dict[str, int], dict[str, int]]:
  """``(counts, result bytes)`` per collective kind in optimized HLO text.

  Async pairs (``all-gather-start`` / ``-done``) count once, at the start.
  """
  counts = dict.fromkeys(COLLECTIVES, 0)
  nbytes = dict.fromkeys(COLLECTIVES, 0)
  for line in hlo_text.splitlines():
    match = _COLLECTIVE_RE.search(line)
    if not match:
      continue
    op = match.group('op')
    counts[op] += 1
    for dtype, dims in _ARRAY_RE.findall(match.group('type')):
      size = 1
      for d in filter(None, dims.split(',')):
        size *= int(d)
      itemsize = 1 if dtype == 'pred' else max(1, int(re.match(r'[a-z]+(\d+)', dtype)[1]) // 8)
      nbytes[op] += size * itemsize
  return counts, nbytes


REMAT_WARNING = 'Involuntary full rematerialization'


@contextlib.contextmanager
def compiler_log(lines: list[str]):
  """Collects what XLA writes to stderr (fd 2) meanwhile into ``lines`` (and passes it on)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read().decode(errors='replace')
      sys.stderr.write(text)
      lines.extend(text.splitlines())


def _row(pair, layout: str, n: int, rules: dict[str, Any], memory: dict[str, int],
         executable, compile_s: float, log_lines: list[str]) -> dict[str, Any]:
  counts, nbytes = collective_stats(executable.as_text())
  return {'pair': pair.name, 'kind': pair.kind, 'layout': layout, 'devices': n,
          'mesh': mesh_shape(layout, n), 'rules': rules,
          **memory, **compile_lib.step_memory(executable),
          'collectives': counts, 'collective_bytes': nbytes,
          # SPMD partitioner warnings: a sharding it could only reach by
          # replicating the array first (an extra all-gather).
          'involuntary_remat': sum(REMAT_WARNING in line for line in log_lines),
          'compile_s': round(compile_s, 2)}


# --- vision pair: train.build on fake CIFAR-100 -------------------------------------------


def prepare_vision(pair: VisionPair, workdir: str) -> tuple[str, str]:
  """Fake CIFAR-100 in ``workdir/data`` and an initialised teacher run; their paths."""
  data_dir = os.path.join(workdir, 'data')
  testing.write_fake_tfds_data('cifar100', data_dir,
                               {'train': pair.batch_size, 'test': 16})
  config = config_args.load_config_file(CRD_CONFIG, 'role=teacher,runlocal')
  config.student.model = pair.teacher
  config.data.data_dir = data_dir
  teacher_dir = os.path.join(workdir, 'teacher')
  os.makedirs(teacher_dir)
  checkpoint.write_config(teacher_dir, config)
  # The teacher's variables as its run would save them (no train step compiled).
  model = registry.get('models', pair.teacher)(num_classes=100)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
      jax.random.PRNGKey(0))
  variables = dict(nn.unbox(variables))
  params = variables.pop('params')
  teacher_state = state_lib.DistillState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=variables, aux_params={},
      opt_state={}, method_state={}, rng=jax.random.PRNGKey(0))
  manager = checkpoint.make_manager(teacher_dir, 1)
  checkpoint.save(manager, teacher_state)
  manager.wait_until_finished()
  manager.close()
  return data_dir, teacher_dir


def measure_vision(pair: VisionPair, layout: str, n: int, data_dir: str,
                   teacher_dir: str) -> dict[str, Any]:
  config = config_args.load_config_file(
      CRD_CONFIG, f'method={pair.method},teacher_workdir={teacher_dir},runlocal')
  config.student.model = pair.student
  config.data.data_dir = data_dir
  config.teacher.allow_unfinished = True  # A teacher at its random init (compile only).
  config.train.batch_size = pair.batch_size
  config.mesh.update(mesh_shape(layout, n))
  rules = LAYOUT_RULES['vision'][layout]
  config.sharding.rules = (('batch', ('data', 'fsdp')),) + tuple(rules['student'])
  config.sharding.teacher_rules = (('batch', ('data', 'fsdp')),) + tuple(rules['teacher'])
  start, log_lines = time.perf_counter(), []
  with compiler_log(log_lines):
    exp = train.build(config, devices=jax.devices()[:n])
  compile_s = time.perf_counter() - start
  memory = exp.compiled.memory
  return _row(pair, layout, n, rules, {
      'student_params': memory['params'], 'student_opt_state': memory['opt_state'],
      'teacher_variables': memory['teachers'],
      'student_param_count': exp.compiled.num_params}, exp.compiled.train_fn, compile_s,
      log_lines)


# --- LM pair: abstract state, teacher and batch --------------------------------------------


def compile_lm_step(pair: LMPair, mesh, student_rules, teacher_rules):
  """The LM train step compiled for ``mesh`` from abstract inputs.

  Returns ``(executable, abstract_state, abstract_teacher)``: the LM task's
  own compile (``tasks.language_model.compile_lm``, as every run), with the
  teacher laid out by ``teacher_rules`` and given as shape structs: no
  weights are made.
  """
  student, teacher = Llama(pair.student), Llama(pair.teacher)
  sample = jnp.zeros((1, pair.seq_len), jnp.int32)
  boxed_teacher = jax.eval_shape(teacher.init, jax.random.PRNGKey(0), sample)
  abstract_teacher = sharding.with_shardings(
      boxed_teacher, sharding.logical_shardings(boxed_teacher, mesh, teacher_rules))
  config = defaults.default_config('language_model')
  config.optim.update(LM_OPTIM)
  config.sharding.rules = tuple(student_rules)
  # Examples of P + R = seq_len + 1 tokens give the step seq_len inputs.
  p = min(PROMPT_LEN, pair.seq_len // 2)
  prompt, response = (pair.batch_size, p), (pair.batch_size, pair.seq_len + 1 - p)
  abstract_batch = {
      'prompt': jax.ShapeDtypeStruct(prompt, jnp.int32),
      'prompt_mask': jax.ShapeDtypeStruct(prompt, jnp.bool_),
      'response': jax.ShapeDtypeStruct(response, jnp.int32),
      'response_mask': jax.ShapeDtypeStruct(response, jnp.bool_),
      'index': jax.ShapeDtypeStruct((pair.batch_size,), jnp.int32)}
  compiled = language_model.compile_lm(
      config, mesh, student=student, teacher=teacher, teacher_variables=abstract_teacher,
      method=methods.from_config(ml_collections.ConfigDict({'name': pair.method})),
      schedule=optim.make_schedule(config.optim, steps_per_epoch=1, total_steps=1000),
      abstract_batch=abstract_batch, teacher_name=pair.name)
  return compiled.train_fn, compiled.abstract_state, abstract_teacher


def measure_lm(pair: LMPair, layout: str, n: int) -> dict[str, Any]:
  rules = LAYOUT_RULES['lm'][layout]
  mesh = make_mesh(layout, n)
  sharding.check_batch_size('batch_size', pair.batch_size, mesh)
  start, log_lines = time.perf_counter(), []
  with compiler_log(log_lines):
    executable, state, teacher = compile_lm_step(pair, mesh, rules['student'], rules['teacher'])
  compile_s = time.perf_counter() - start
  return _row(pair, layout, n, rules, {
      'student_params': sharding.bytes_per_device(state.params),
      'student_opt_state': sharding.bytes_per_device(state.opt_state),
      'teacher_variables': sharding.bytes_per_device(teacher),
      'student_param_count': sum(x.size for x in jax.tree.leaves(state.params))},
      executable, compile_s, log_lines)


# --- driver, table, README ------------------------------------------------------------------


def run(pairs: Sequence[Any], device_counts: Sequence[int], layouts: Sequence[str] = LAYOUTS,
        out: str | None = RESULTS_JSON, workdir: str | None = None,
        log=print) -> dict[str, Any]:
  """Measures every (pair, layout, n); writes ``out`` (JSON) after each row."""
  if max(device_counts) > jax.device_count():
    raise ValueError(f'{max(device_counts)} devices asked for, {jax.device_count()} present '
                     f'(set XLA_FLAGS={_COUNT_FLAG}=8 before jax is imported).')
  results = {'jax': jax.__version__, 'platform': platform.platform(),
             'backend': jax.default_backend(), 'device_counts': list(device_counts),
             'layouts': list(layouts), 'tensor_axis': TENSOR, 'rows': []}
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    for pair in pairs:
      if pair.kind == 'vision':
        data_dir, teacher_dir = prepare_vision(pair, os.path.join(tmp, pair.teacher))
        measure = functools.partial(measure_vision, pair, data_dir=data_dir,
                                    teacher_dir=teacher_dir)
      else:
        measure = functools.partial(measure_lm, pair)
      for layout in layouts:
        for n in device_counts:
          row = measure(layout=layout, n=n)
          results['rows'].append(row)
          log(f'{pair.name} {layout} n={n}: params {_mib(row["student_params"])} MiB, '
              f'opt {_mib(row["student_opt_state"])} MiB, teacher '
              f'{_mib(row["teacher_variables"])} MiB, temp {_mib(row.get("step_temp", 0))} MiB, '
              f'collectives {row["collectives"]} ({row["compile_s"]} s)')
          if out:
            _write_json(results, out)
  return results


def _write_json(results: dict[str, Any], out: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.tmp', 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(out + '.tmp', out)


def _mib(nbytes: int) -> str:
  return f'{nbytes / 2**20:.2f}'


SHORT = {'all-reduce': 'AR', 'all-gather': 'AG', 'reduce-scatter': 'RS',
         'collective-permute': 'CP', 'all-to-all': 'A2A'}


def markdown_table(results: dict[str, Any]) -> str:
  """One row per (pair, layout, n); MiB per device; collectives as counts."""
  head = ('| pair | layout | n | mesh d/f/t | student params MiB | opt state MiB | '
          'teacher MiB | resident vs n=1 | step args MiB | step temp MiB | '
          + ' | '.join(SHORT.values()) + ' | collective MiB | remat warnings |')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  base = {}
  for row in results['rows']:
    resident = row['student_params'] + row['student_opt_state'] + row['teacher_variables']
    base.setdefault((row['pair'], row['layout']), (row['devices'], resident))
    n0, resident0 = base[(row['pair'], row['layout'])]
    ratio = f'{resident / resident0:.3f}' + ('' if n0 == 1 else f' (vs n={n0})')
    mesh = row['mesh']
    lines.append(
        f'| {row["pair"]} | {row["layout"]} | {row["devices"]} | '
        f'{mesh["data"]}/{mesh["fsdp"]}/{mesh["tensor"]} | {_mib(row["student_params"])} | '
        f'{_mib(row["student_opt_state"])} | {_mib(row["teacher_variables"])} | {ratio} | '
        f'{_mib(row.get("step_arguments", 0))} | {_mib(row.get("step_temp", 0))} | '
        + ' | '.join(str(row['collectives'][k]) for k in SHORT) +
        f' | {_mib(sum(row["collective_bytes"].values()))} | {row["involuntary_remat"]} |')
  return '\n'.join(lines)


def rules_text(pairs: Sequence[Any]) -> str:
  lines = []
  for kind in dict.fromkeys(p.kind for p in pairs):
    for layout in LAYOUTS:
      rules = LAYOUT_RULES[kind][layout]
      fmt = lambda rs: ', '.join(f'({a!r}, {m!r})' for a, m in rs) or 'none (replicated)'
      same = rules['student'] == rules['teacher']
      lines.append(f'- {kind} `{layout}`: student {fmt(rules["student"])}' +
                   ('; teacher the same' if same else f'; teacher {fmt(rules["teacher"])}'))
  return '\n'.join(lines)


def update_readme(section_body: str, readme: str = README) -> None:
  """Replaces the text between the markers of the scaling section (appends it if absent)."""
  text = open(readme).read() if os.path.exists(readme) else '# Benchmarks\n'
  block = f'{BEGIN}\n{section_body}\n{END}'
  if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
  else:
    text = text.rstrip('\n') + f'\n\n{SECTION_TITLE}\n\n{block}\n'
  with open(readme, 'w') as f:
    f.write(text)


def generated_section(results: dict[str, Any], command: str, pairs: Sequence[Any]) -> str:
  return '\n'.join([
      f'Generated by `{command}` (jax {results["jax"]}, {results["backend"]}, simulated '
      f'devices; {results["platform"]}). Bytes are per device. "resident" = student params + '
      'optimizer state + teacher variables (from the shardings); "step args/temp" = the '
      "compiled step's `memory_analysis()` (arguments include the batch shard); collective "
      'columns count the ops of each kind in the optimized HLO (AR all-reduce, AG all-gather, '
      'RS reduce-scatter, CP collective-permute, A2A all-to-all) and "collective MiB" sums '
      'their result sizes; "remat warnings" counts the SPMD partitioner\'s "Involuntary full '
      'rematerialization" warnings (a resharding done by replicating the array first).',
      '', 'Rules (logical axis -> mesh axis):', '',
      rules_text(pairs), '', markdown_table(results)])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='n in {1, 8} only.')
  parser.add_argument('--devices', default='1,2,4,8', help='Device counts.')
  parser.add_argument('--pairs', default='vision,lm', help=f'Of: {",".join(PAIRS)}.')
  parser.add_argument('--layouts', default=','.join(LAYOUTS))
  parser.add_argument('--out', default=RESULTS_JSON)
  parser.add_argument('--readme', default=README, help="'' = do not touch the README.")
  args = parser.parse_args(argv)
  counts = [1, 8] if args.quick else [int(x) for x in args.devices.split(',')]
  pairs = [PAIRS[name] for name in args.pairs.split(',')]
  start = time.perf_counter()
  results = run(pairs, counts, args.layouts.split(','), out=args.out)
  results['wall_s'] = round(time.perf_counter() - start, 1)
  _write_json(results, args.out)
  command = 'python -m benchmarks.scale' + (' --quick' if args.quick else '')
  body = generated_section(results, command, pairs)
  print(body)
  if args.readme:
    update_readme(body, args.readme)


if __name__ == '__main__':
  main()
