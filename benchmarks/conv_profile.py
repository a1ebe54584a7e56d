"""Why the vision KD step is slower than PyTorch on CPU: convolutions, one by one.

  python -m benchmarks.conv_profile                  # all parts, ~5 min on 2 cores
  python -m benchmarks.conv_profile --parts=micro    # only the per-conv table

Parts (``--parts``):

* ``micro``: every distinct convolution of resnet32x4 / resnet8x4 at batch 64
  (3x3 stride 1 at 32x32x64, 16x16x128, 8x8x256; the strided 3x3 and 1x1
  projections), forward, input gradient (dx) and weight gradient (dw), with
  jaxlib's default XLA flags (this process does not import distill_jax),
  timed interleaved against PyTorch's oneDNN kernels (NCHW and
  channels_last), GFLOP/s each; also XLA in NCHW and in bfloat16. The XLA
  library that ran each one is read from the compiled HLO (``__ynn_fusion``
  = YNNPACK, an unfused ``convolution`` = Eigen, ``__onednn`` = oneDNN).
* ``variants``: the same table for XLA:CPU flag variants, each in its own
  process (XLA_FLAGS is read once per process): jaxlib's default (YNNPACK),
  Eigen convolutions (``--xla_cpu_experimental_ynn_fusion_type=
  -individual_convolution``, distill_jax's default, ``distill_jax.xla_flags``),
  the oneDNN flags (``--xla_cpu_use_onednn``,
  ``--xla_cpu_experimental_onednn_custom_call``); PyTorch channels_last is
  the yardstick inside each process.
* ``profile``: the compiled distill_jax KD step (``train.build(...)``'s train
  step) in a child process per XLA variant (distill_jax's default, jaxlib's
  default): an HLO census (convolutions, their dimension labels and whether
  they sit in YNNPACK fusions, transposes, copies; what a bf16 convolution
  compiles to) and a ``jax.profiler`` trace of 3 steps with
  ``--xla_cpu_enable_xprof_traceme=true``: thread time per category (teacher
  forward convolutions, student forward, dx, dw, layout transposes,
  elementwise / BatchNorm / loss / optimizer).

Run it pinned to one core (``taskset -c 1 python -m benchmarks.conv_profile``)
to compare kernels without the other jobs' scheduling noise.

Writes ``benchmarks/results/conv_profile.json`` and ``.md``.
"""

import collections
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

from benchmarks import report
from benchmarks import xla_trace

FLAGS = flags.FLAGS
flags.DEFINE_list('parts', ['micro', 'variants', 'profile'], 'Parts to run.')
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
    'Eigen convolutions (distill_jax default)':
        '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
    'xla_cpu_use_onednn': '--xla_cpu_use_onednn=true',
    'onednn custom call, XNN/YNN off': (
        '--xla_cpu_experimental_onednn_custom_call=true --xla_cpu_use_xnnpack=false '
        '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'),
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
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
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

    def conv_nchw(x, w, s=s, p=p):
      return lax.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)),
                                      dimension_numbers=('NCHW', 'OIHW', 'NCHW'))

    y = conv(x, w)
    xn, wn = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    dw = lambda c: jax.jit(lambda x, w, g: jax.vjp(c, x, w)[1](g)[1])
    fns = {'fwd': (jax.jit(conv), (x, w)),
           'dx': (jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0]), (x, w, y)),
           'dw': (dw(conv), (x, w, y)),
           'nchw fwd': (jax.jit(conv_nchw), (xn, wn)),
           'nchw dw': (dw(conv_nchw), (xn, wn, conv_nchw(xn, wn))),
           'bf16 fwd': (jax.jit(conv), (xb, wb)),
           'bf16 dw': (dw(conv), (xb, wb, conv(xb, wb)))}
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


def hlo_census(text: str) -> dict:
  """Op census of a compiled KD step's HLO, and what a bf16 convolution compiles to."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  ops = collections.Counter(re.findall(r'= \S+ ([a-z][a-z0-9\-]*)\(', text))
  convs = re.findall(r' convolution\(.*?dim_labels=([^,\s]+)', text)
  entry = text.split('ENTRY')[-1]
  x = jnp.ones((64, 16, 16, 128), jnp.bfloat16)
  w = jnp.ones((3, 3, 128, 128), jnp.bfloat16)
  bf16 = jax.jit(lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
                 ).lower(x, w).compile().as_text()
  return {
      'convolutions': len(convs), 'conv_dim_labels': dict(collections.Counter(convs)),
      'convolutions_in_ynn_fusions': len(convs) - len(re.findall(r' convolution\(', entry)),
      'ops': dict(ops.most_common(25)),
      'custom_fusions': dict(collections.Counter(re.findall(r'"kind":"(__\w+)"', text))),
      'transposes': ops.get('transpose', 0), 'copies': ops.get('copy', 0),
      'bf16_conv_result_types': re.findall(r'(\S+) convolution\(', bf16),
      'bf16_conv_converts': len(re.findall(r' convert\(', bf16)),
  }


def _category(name: str, info: dict) -> str:
  """The category of a profiled thunk (named after its HLO instruction)."""
  ins = info.get(name, {})
  op, args, shape = ins.get('op', ''), ins.get('args', ''), ins.get('shape', '')
  is_conv = (name.startswith(('ynn_fusion', 'convolution', 'conv_general_dilated')) or
             ins.get('kind') == 'convolution')
  if is_conv:
    dims = [int(d) for d in re.findall(r'\d+', shape.split('{')[0])]
    kernel_like = len(dims) == 4 and dims[1] <= 3 and dims[2] <= 3  # [C, kh, kw, C'] output.
    if name.startswith('convolution-base-dilated'):  # lhs-dilated: a strided conv's dx.
      return 'student conv dx'
    if not op or kernel_like:  # XLA's weight-gradient convolutions carry no metadata.
      return 'student conv dw (transposed conv)'
    if 'transpose(jvp' in op:
      return 'student conv dx'
    if 'teacher' in args:
      return 'teacher forward conv'
    return 'student forward conv'
  if name.startswith(('transpose', 'copy')) or ins.get('kind') in ('transpose', 'copy'):
    return 'layout transposes / copies'
  if 'fusion' in name:
    return 'elementwise / BatchNorm / loss / optimizer fusions'
  return 'other'


def profile_child(workdir: str | None, out_json: str) -> None:
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  step = jax_side.vision_step(workdir=workdir)
  text = step.hlo_text
  census = hlo_census(text)
  info = xla_trace.instructions(text)
  per_op, wall = xla_trace.thread_time_per_op(step.step)
  per_cat = collections.Counter()
  for name, seconds in per_op.items():
    per_cat[_category(name, info)] += seconds
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  named = sum(per_cat.values())
  # Eigen's convolution kernels run as thread-pool tasks without trace events:
  # the busy time they leave unnamed is at most wall x cores - named.
  per_cat['idle, or Eigen convolution tasks (they carry no trace events)'] = max(
      0.0, wall * cores - named)
  total = sum(per_cat.values())
  result = {'xla_flags': os.environ.get('XLA_FLAGS', ''), 'hlo': census, 'cores': cores,
            'wall_s_per_step_traced': wall, 'thread_s_per_step': total,
            'named_thread_s_per_step': named,
            'categories': {k: {'s': v, 'share': v / total} for k, v in per_cat.most_common()},
            'top_ops': [{'name': k, 's': v, 'category': _category(k, info),
                         **info.get(k, {'op': '', 'args': ''})}
                        for k, v in per_op.most_common(15)]}
  for row in result['top_ops']:
    row['args'] = row['args'][:120]
  with open(out_json, 'w') as f:
    json.dump(result, f)


# The KD step profiled twice: with distill_jax's XLA:CPU defaults
# (distill_jax.xla_flags: convolutions on Eigen) and with jaxlib's own
# (convolutions on YNNPACK; setting the flag explicitly keeps distill_jax's
# default out).
PROFILE_VARIANTS = {
    'distill_jax default (Eigen convolutions)': '',
    'jaxlib default (YNNPACK convolutions)':
        '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution',
}


def profile(workdir: str | None) -> dict:
  out = {}
  for name, xla_flags in PROFILE_VARIANTS.items():
    out_json = tempfile.mktemp(suffix='.json')
    extra = [f'--out_json_path={out_json}'] + ([f'--workdir={workdir}'] if workdir else [])
    proc = _child('--child_profile', f'{xla_trace.TRACEME_FLAG} {xla_flags}'.strip(),
                  extra)
    if proc.returncode or not os.path.exists(out_json):
      out[name] = {'error': proc.stderr[-3000:]}
    else:
      with open(out_json) as f:
        out[name] = json.load(f)
    print(name, json.dumps(out[name].get('categories', out[name]))[:400], flush=True)
  return out


flags.DEFINE_string('out_json_path', '', 'Internal: where --child_profile writes.')


def markdown(results: dict) -> str:
  lines = []
  if 'micro' in results:
    lines += ['GFLOP/s per convolution, batch %d, jaxlib-default XLA flags (interleaved '
              'medians):' % results['batch'], '',
              '| conv | XLA lib | XLA fwd | XLA dx | XLA dw | XLA NCHW fwd/dw | XLA bf16 fwd/dw | '
              'torch NCHW fwd/dx/dw | torch channels_last fwd/dx/dw | '
              'XLA / torch CL (fwd, dx, dw) |',
              '|---|---|---|---|---|---|---|---|---|---|']
    for r in results['micro']:
      g = r['gflops']
      lines.append(
          f'| {r["shape"]} | {r["xla_library"]["fwd"]} | {g["xla fwd"]:.0f} | {g["xla dx"]:.0f} | '
          f'{g["xla dw"]:.0f} | {g["xla nchw fwd"]:.0f} / {g["xla nchw dw"]:.0f} | '
          f'{g["xla bf16 fwd"]:.0f} / {g["xla bf16 dw"]:.0f} | '
          f'{g["torch_nchw fwd"]:.0f} / {g["torch_nchw dx"]:.0f} / '
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
  for name, p in results.get('profile', {}).items():
    if 'categories' not in p:
      lines += ['', f'{name}: profile failed: {p.get("error", "")[-300:]}']
      continue
    h = p['hlo']
    lines += ['', f'**{name}** (`XLA_FLAGS={p["xla_flags"]}`): compiled KD step with '
              f'{h["convolutions"]} convolutions ({h["convolutions_in_ynn_fusions"]} inside '
              f'YNNPACK fusions), dim_labels {h["conv_dim_labels"]}; {h["transposes"]} '
              f'transposes, {h["copies"]} copies; custom fusions {h["custom_fusions"]}. '
              f'Thread time by category on {p["cores"]} core(s) '
              f'({p["wall_s_per_step_traced"]:.2f} s wall per step while traced):', '',
              '| category | thread s / step | share |', '|---|---|---|']
    for k, v in p['categories'].items():
      lines.append(f'| {k} | {v["s"]:.2f} | {100 * v["share"]:.0f}% |')
  if results.get('profile'):
    h = next(iter(results['profile'].values())).get('hlo')
    if h:
      lines += ['', f'A bfloat16 convolution compiles to a {h["bf16_conv_result_types"]} '
                f'convolution with {h["bf16_conv_converts"]} converts around it (XLA:CPU '
                'computes it in float32).']
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
  if 'profile' in FLAGS.parts:
    results['profile'] = profile(workdir)
  results['loadavg_after'] = os.getloadavg()
  report.write(FLAGS.out, results, markdown(results))


if __name__ == '__main__':
  app.run(main)
