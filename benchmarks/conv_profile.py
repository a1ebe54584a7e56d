"""Why the vision KD step is slower than PyTorch on CPU: convolutions, one by one.

  python -m benchmarks.conv_profile                  # all parts, ~5 min on 2 cores
  python -m benchmarks.conv_profile --parts=micro    # only the per-conv table

Parts (``--parts``):

* ``micro``: every distinct convolution of resnet32x4 / resnet8x4 at batch 64
  (3x3 stride 1 at 32x32x64, 16x16x128, 8x8x256; the strided 3x3 and 1x1
  projections), forward, input gradient (dx) and weight gradient (dw), timed
  interleaved against PyTorch's oneDNN kernels (NCHW and channels_last),
  GFLOP/s each; the XLA library that ran each one is read from the compiled
  HLO (``__ynn_fusion`` = YNNPACK, plain ``convolution`` = Eigen,
  ``__onednn_fusion`` = oneDNN).
* ``variants``: the same table for XLA:CPU flag variants, each in its own
  process (XLA_FLAGS is read once per process): default (YNNPACK), Eigen
  convolutions (``--xla_cpu_experimental_ynn_fusion_type=individual_dot``),
  the oneDNN flags (``--xla_cpu_use_onednn``,
  ``--xla_cpu_experimental_onednn_custom_call``); PyTorch channels_last is
  the yardstick inside each process.
* ``hlo``: the compiled distill_jax KD step (``train.build(...).train_fn``):
  convolutions and their dimension labels, transposes / copies, fusions by
  kind, bf16 handling (does a bf16 convolution stay bf16?).
* ``profile``: a ``jax.profiler`` trace of 3 KD steps with
  ``--xla_cpu_enable_xprof_traceme=true`` (re-executed in a child process),
  thread time per category: teacher forward convolutions, student forward,
  dx, dw, layout transposes, elementwise/BatchNorm, other.

Writes ``benchmarks/results/conv_profile.json`` and ``.md``.
"""

import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list('parts', ['micro', 'variants', 'hlo', 'profile'], 'Parts to run.')
flags.DEFINE_integer('rounds', 7, 'Interleaved rounds per measurement.')
flags.DEFINE_integer('batch', 64, 'Batch size.')
flags.DEFINE_string('out', 'benchmarks/results/conv_profile', 'Output path without extension.')
flags.DEFINE_string('workdir', '', 'Scratch dir for the KD step (fake CIFAR-100, teacher run).')
flags.DEFINE_bool('child_micro', False, 'Internal: print the micro table as JSON and exit.')
flags.DEFINE_bool('child_profile', False, 'Internal: write the profile as JSON and exit.')

# (H = W, C_in, C_out, kernel, stride) of every distinct convolution in
# resnet32x4 / resnet8x4 at CIFAR resolution (the stem 3 -> 32 is left out:
# it is tiny and memory bound).
SHAPES = ((32, 64, 64, 3, 1), (16, 128, 128, 3, 1), (8, 256, 256, 3, 1),
          (32, 64, 128, 3, 2), (32, 64, 128, 1, 2), (32, 32, 64, 3, 1))

VARIANTS = {
    'default (YNNPACK)': '',
    'Eigen convolutions': '--xla_cpu_experimental_ynn_fusion_type=individual_dot',
    'xla_cpu_use_onednn': '--xla_cpu_use_onednn=true',
    'onednn custom call, XNN/YNN off': (
        '--xla_cpu_experimental_onednn_custom_call=true --xla_cpu_use_xnnpack=false '
        '--xla_cpu_experimental_ynn_fusion_type=individual_dot'),
}


def _library(hlo_text: str) -> str:
  found = []
  if '__ynn_fusion' in hlo_text:
    found.append('YNNPACK')
  if '__onednn' in hlo_text or ('onednn' in hlo_text.lower() and 'custom-call' in hlo_text):
    found.append('oneDNN')
  if re.search(r'\sconvolution\(', hlo_text.split('ENTRY')[-1]):
    found.append('Eigen')
  return '+'.join(found) or '?'


def micro(batch: int, rounds: int) -> list[dict]:
  """Per-convolution GFLOP/s: XLA fwd/dx/dw vs PyTorch NCHW / channels_last."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  rows = []
  for h, ci, co, k, s in SHAPES:
    p = k // 2
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, h, h, ci))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, ci, co)) * 0.05

    def conv(x, w, s=s, p=p):
      return lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    y = conv(x, w)
    fns = {'fwd': (jax.jit(conv), (x, w)),
           'dx': (jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0]), (x, w, y)),
           'dw': (jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1]), (x, w, y))}
    cases, library = {}, {}
    for name, (f, args) in fns.items():
      compiled = f.lower(*args).compile()
      library[name] = _library(compiled.as_text())
      cases[f'xla {name}'] = (lambda c=compiled, a=args: jax.block_until_ready(c(*a)))
    xt = torch.randn(batch, ci, h, h)
    wt = torch.randn(co, ci, k, k) * 0.05
    for layout, xx in (('nchw', xt), ('cl', xt.contiguous(memory_format=torch.channels_last))):
      g = F.conv2d(xx, wt, stride=s, padding=p)
      back = lambda mask, g=g, xx=xx: torch.ops.aten.convolution_backward(
          g, xx, wt, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
      cases[f'torch_{layout} fwd'] = lambda xx=xx: F.conv2d(xx, wt, stride=s, padding=p)
      cases[f'torch_{layout} dx'] = lambda back=back: back([True, False, False])
      cases[f'torch_{layout} dw'] = lambda back=back: back([False, True, False])
    names = list(cases)
    times = {n: [] for n in names}
    with torch.no_grad():
      for fn in cases.values():
        fn()
        fn()
      for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
          start = time.perf_counter()
          cases[n]()
          times[n].append(time.perf_counter() - start)
    flops = 2.0 * batch * (h // s)**2 * co * ci * k * k
    gflops = {n: flops / statistics.median(t) / 1e9 for n, t in times.items()}
    row = {'shape': f'{h}x{h}x{ci} -> {co}, {k}x{k}/{s}', 'gflop': flops / 1e9,
           'xla_library': library, 'gflops': gflops}
    for op in ('fwd', 'dx', 'dw'):
      row[f'xla_vs_torch_cl_{op}'] = gflops[f'xla {op}'] / gflops[f'torch_cl {op}']
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def _child(flag: str, xla_flags: str, extra: list[str]) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS=xla_flags)
  cmd = [sys.executable, '-m', 'benchmarks.conv_profile', flag, *extra]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                        cwd=os.path.join(os.path.dirname(__file__), '..'))


def variants(batch: int, rounds: int) -> dict[str, list[dict]]:
  out = {}
  for name, xla_flags in VARIANTS.items():
    proc = _child('--child_micro', xla_flags, [f'--batch={batch}', f'--rounds={rounds}'])
    lines = [l for l in proc.stdout.splitlines() if l.startswith('MICRO ')]
    if not lines:
      out[name] = {'flags': xla_flags, 'error': proc.stderr[-2000:]}
    else:
      out[name] = {'flags': xla_flags, 'rows': json.loads(lines[-1][6:])}
    print(name, json.dumps(out[name])[:300], flush=True)
  return out


def hlo(workdir: str | None) -> dict:
  """Op census of the compiled KD step and the bf16 question."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  step = jax_side.vision_step(workdir=workdir)
  text = step.hlo_text
  ops = collections.Counter(re.findall(r'= \S+ ([a-z][a-z0-9\-]*)\(', text))
  convs = re.findall(r' convolution\(.*?dim_labels=([^,\s]+)', text)
  fusion_kinds = collections.Counter(re.findall(r'"kind":"(__\w+)"', text))
  loop_kinds = collections.Counter(re.findall(r'kind=(k\w+)', text))
  x = jnp.ones((64, 16, 16, 128), jnp.bfloat16)
  w = jnp.ones((3, 3, 128, 128), jnp.bfloat16)
  bf16 = jax.jit(lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
                 ).lower(x, w).compile().as_text()
  bf16_conv = re.findall(r'(\S+) convolution\(', bf16)
  return {
      'flops_per_step': step.flops, 'convolutions': len(convs),
      'conv_dim_labels': dict(collections.Counter(convs)),
      'ops': dict(ops.most_common(25)), 'custom_fusions': dict(fusion_kinds),
      'fusion_kinds': dict(loop_kinds),
      'transposes': ops.get('transpose', 0), 'copies': ops.get('copy', 0),
      'bf16_conv_result_types': bf16_conv,
      'bf16_conv_converts': len(re.findall(r' convert\(', bf16)),
  }


def _category(name: str, info: dict) -> str:
  op = info.get(name, {}).get('op', '')
  args = info.get(name, {}).get('args', '')
  if name.startswith('convolution-base-dilated'):  # lhs-dilated: a strided conv's dx (Eigen).
    return 'student conv dx'
  if name.startswith('ynn_fusion') or name.startswith('convolution'):
    if 'transpose(jvp' in op:
      return 'student conv dx'
    if not op:
      return 'student conv dw (transposed conv)'
    if 'teacher' in args:
      return 'teacher forward conv'
    return 'student forward conv'
  if name.startswith('transpose') or name.startswith('copy'):
    return 'layout transposes / copies'
  if 'fusion' in name:
    return 'elementwise / BatchNorm / loss / optimizer fusions'
  return 'other'


def profile_child(workdir: str | None, out_json: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  step = jax_side.vision_step(workdir=workdir)
  text = step.hlo_text
  info = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%(\S+) = \S+ fusion\((.*?)\), kind=\w+, calls=%\S+?,(.*)$',
                       text, re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(3))
    info[m.group(1)] = {'op': op.group(1) if op else '', 'args': m.group(2)}
  step.step()
  step.step()
  trace_dir = tempfile.mkdtemp(prefix='conv_profile_trace_')
  n = 3
  start = time.perf_counter()
  jax.profiler.start_trace(trace_dir)
  for _ in range(n):
    step.step()
  jax.profiler.stop_trace()
  wall = (time.perf_counter() - start) / n
  data = ProfileData.from_file(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True)[0])
  per_cat = collections.Counter()
  per_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if 'XLAEigen' not in line.name:
        continue
      for ev in line.events:
        if ev.name.startswith(('ThunkExecutor', 'SlinkyThreadPool', 'end:')):
          continue
        per_cat[_category(ev.name, info)] += ev.duration_ns / n / 1e9
        per_op[ev.name] += ev.duration_ns / n / 1e9
  total = sum(per_cat.values())
  result = {'wall_s_per_step_traced': wall, 'thread_s_per_step': total,
            'categories': {k: {'s': v, 'share': v / total} for k, v in per_cat.most_common()},
            'top_ops': [{'name': k, 's': v, **info.get(k, {'op': '', 'args': ''})}
                        for k, v in per_op.most_common(15)]}
  for row in result['top_ops']:
    row['args'] = row['args'][:120]
  with open(out_json, 'w') as f:
    json.dump(result, f)


def profile(workdir: str | None) -> dict:
  out_json = tempfile.mktemp(suffix='.json')
  extra = [f'--out_json_path={out_json}'] + ([f'--workdir={workdir}'] if workdir else [])
  proc = _child('--child_profile', '--xla_cpu_enable_xprof_traceme=true', extra)
  if proc.returncode or not os.path.exists(out_json):
    return {'error': proc.stderr[-3000:]}
  with open(out_json) as f:
    return json.load(f)


flags.DEFINE_string('out_json_path', '', 'Internal: where --child_profile writes.')


def markdown(results: dict) -> str:
  lines = []
  if 'micro' in results:
    lines += ['GFLOP/s per convolution, batch %d (interleaved medians):' % results['batch'], '',
              '| conv | XLA lib | XLA fwd | XLA dx | XLA dw | torch NCHW fwd/dx/dw | '
              'torch channels_last fwd/dx/dw | XLA / torch CL (fwd, dx, dw) |',
              '|---|---|---|---|---|---|---|---|']
    for r in results['micro']:
      g = r['gflops']
      lines.append(
          f'| {r["shape"]} | {r["xla_library"]["fwd"]} | {g["xla fwd"]:.0f} | {g["xla dx"]:.0f} | '
          f'{g["xla dw"]:.0f} | {g["torch_nchw fwd"]:.0f} / {g["torch_nchw dx"]:.0f} / '
          f'{g["torch_nchw dw"]:.0f} | {g["torch_cl fwd"]:.0f} / {g["torch_cl dx"]:.0f} / '
          f'{g["torch_cl dw"]:.0f} | {r["xla_vs_torch_cl_fwd"]:.2f}, '
          f'{r["xla_vs_torch_cl_dx"]:.2f}, {r["xla_vs_torch_cl_dw"]:.2f} |')
  if 'variants' in results:
    lines += ['', 'XLA:CPU flag variants (XLA GFLOP/s over PyTorch channels_last in the same '
              'process; mean over the shapes):', '',
              '| variant | XLA_FLAGS | library | fwd | dx | dw |', '|---|---|---|---|---|---|']
    for name, v in results['variants'].items():
      if 'rows' not in v:
        lines.append(f'| {name} | `{v["flags"]}` | error | | | |')
        continue
      mean = lambda op: statistics.mean(r[f'xla_vs_torch_cl_{op}'] for r in v['rows'])
      libs = sorted({r['xla_library']['fwd'] for r in v['rows']})
      lines.append(f'| {name} | `{v["flags"] or "(none)"}` | {"/".join(libs)} | '
                   f'{mean("fwd"):.2f} | {mean("dx"):.2f} | {mean("dw"):.2f} |')
  if 'hlo' in results:
    h = results['hlo']
    lines += ['', f'Compiled KD step: {h["convolutions"]} convolutions, dim_labels '
              f'{h["conv_dim_labels"]}; {h["transposes"]} transposes, {h["copies"]} copies; '
              f'custom fusions {h["custom_fusions"]}; a bf16 convolution compiles to '
              f'{h["bf16_conv_result_types"]} with {h["bf16_conv_converts"]} converts.']
  if 'profile' in results and 'categories' in results['profile']:
    p = results['profile']
    lines += ['', f'Thread time of one KD step by category ({p["thread_s_per_step"]:.2f} '
              f'thread-s per step; {p["wall_s_per_step_traced"]:.2f} s wall while traced):', '',
              '| category | thread s / step | share |', '|---|---|---|']
    for k, v in p['categories'].items():
      lines.append(f'| {k} | {v["s"]:.2f} | {100 * v["share"]:.0f}% |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.child_micro:
    rows = micro(FLAGS.batch, FLAGS.rounds)
    print('MICRO ' + json.dumps(rows), flush=True)
    return
  if FLAGS.child_profile:
    profile_child(FLAGS.workdir or None, FLAGS.out_json_path)
    return
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix='conv_profile_')
  results = {'batch': FLAGS.batch, 'rounds': FLAGS.rounds, 'loadavg_before': os.getloadavg()}
  if 'micro' in FLAGS.parts:
    results['micro'] = micro(FLAGS.batch, FLAGS.rounds)
  if 'variants' in FLAGS.parts:
    results['variants'] = variants(FLAGS.batch, max(3, FLAGS.rounds // 2))
  if 'hlo' in FLAGS.parts:
    results['hlo'] = hlo(workdir)
  if 'profile' in FLAGS.parts:
    results['profile'] = profile(workdir)
  results['loadavg_after'] = os.getloadavg()
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  table = markdown(results)
  with open(FLAGS.out + '.md', 'w') as f:
    f.write(table + '\n')
  print(table)


if __name__ == '__main__':
  app.run(main)
