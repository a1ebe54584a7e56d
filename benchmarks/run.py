"""Side-by-side KD train-step speed: distill_jax vs PyTorch, one command.

  python -m benchmarks.run            # full run (~10 min on 2 CPU cores)
  python -m benchmarks.run --quick    # same shapes, 5 timed steps, no torch.compile

Suites (``--suites``):

* ``vision``: one KD update, resnet32x4 -> resnet8x4, batch 64, CIFAR-sized
  inputs (RepDistiller's recipe: T = 4, alpha = 0.1, SGD momentum 0.9, weight
  decay 5e-4). Columns: ``distill_jax`` (``train.build(config).train_fn`` for
  ``configs/cifar100/crd.py``), ``torch_eager``, ``torch_compile``
  (inductor), ``torchdistill`` (its ``KDLoss`` on ``ForwardHookManager`` I/O
  dicts, as its ``DistillationBox`` does; eager).
* ``lm``: one token-level KD update (forward KL, AdamW), teacher 8 x 512,
  student 4 x 256 (Llama: RMSNorm, RoPE, GQA, SwiGLU, tied embeddings),
  sequence 256, vocabulary 32,768, batch 8. Columns: ``distill_jax``
  (``tasks.language_model.compile_lm(...).train_fn`` with ``token_kl``),
  ``torch_eager`` (``torch_compile`` with ``--lm_torch_compile``).

Method: every column is built and warmed up (``--warmup`` steps, the first one
timed separately: it includes torch.compile's compilation), then the columns
are timed **interleaved** in rounds (A B C D, D C B A, A B C D, ...), one step
each, ``--steps`` rounds, so a change in the machine's load hits every column
alike. Reported per column: the median step time and its inter-quartile range,
the ratio ``median(torch_eager) / median(column)`` (> 1: faster than PyTorch
eager) and the median of the per-round paired ratios, examples (tokens)/s,
and model FLOP/s: XLA's ``cost_analysis()['flops']`` of the distill_jax step
(the same model math for every column) / step time, against the machine's
measured matmul peak (best of XLA's and PyTorch's 2048^3 float32 product,
timed interleaved in the same run). Compile time: distill_jax's trace +
lowering and XLA compile seconds (ahead of time, ``lower().compile()``);
torch.compile's first-step seconds.

Writes ``<--out>.json`` (every step time, the machine, versions, load) and
``<--out>.md`` (the table); default ``--out=benchmarks/results/kd_step``
(``kd_step_quick`` with ``--quick``).
"""

import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags

from benchmarks import report

FLAGS = flags.FLAGS


VISION_COLUMNS = ('distill_jax', 'torch_eager', 'torch_compile', 'torchdistill')


def _log(message: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _loadavg() -> list[float] | None:
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def interleave(columns: dict[str, Callable[[], Any]], rounds: int,
               cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
  """Times one call of every column per round; odd rounds run in reverse order.

  Returns wall seconds per call; ``cpu_times`` (if given) receives this
  process's CPU seconds (all threads, user + system) per call.
  """
  names = list(columns)
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      cpu = time.process_time()
      times[name].append(_timed(columns[name]))
      if cpu_times is not None:
        cpu_times.setdefault(name, []).append(time.process_time() - cpu)
  return times


def _quartiles(values: list[float]) -> tuple[float, float]:
  if len(values) < 2:
    return values[0], values[0]
  q = statistics.quantiles(values, n=4, method='inclusive')
  return q[0], q[2]


def summarize(times: dict[str, list[float]], *, baseline: str, items_per_step: float,
              flops_per_step: float, peak_flops: float) -> dict[str, dict[str, Any]]:
  """Median, IQR, ratios vs ``baseline``, throughput and FLOP utilisation per column."""
  out = {}
  base = times.get(baseline)
  for name, ts in times.items():
    median = statistics.median(ts)
    q1, q3 = _quartiles(ts)
    row = {'median_s': median, 'q1_s': q1, 'q3_s': q3, 'min_s': min(ts),
           'items_per_s': items_per_step / median,
           'flops_per_s': flops_per_step / median if flops_per_step else None,
           'mfu': flops_per_step / median / peak_flops if flops_per_step and peak_flops else None}
    if base:
      row['speedup_vs_' + baseline] = statistics.median(base) / median
      row['paired_speedup_vs_' + baseline] = statistics.median(
          b / t for b, t in zip(base, ts))
    out[name] = row
  return out


# Dense bf16 tensor-core peaks (FLOP/s) of accelerators, from the vendors' data sheets
# (SXM parts), for the nominal MFU; the measured matmul peak is reported next to it.
NOMINAL_PEAKS = {'H200': 989.4e12, 'H100': 989.4e12, 'A100': 312e12}


class PeakProbe:
  """One ``n x n @ n x n`` product (2 n^3 FLOPs) per call in XLA and in PyTorch.

  float32 on CPU; bfloat16 on an accelerator (its tensor-core peak).
  ``calls`` maps ``'peak:xla'`` / ``'peak:torch'`` to blocking callables, which
  the suites time interleaved with their columns, so that a suite's MFU is
  against the peak measured under the same load.
  """

  def __init__(self, n: int, torch_device: str | None):
    import jax  # pylint: disable=g-import-not-at-top
    from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
    on_cpu = jax.default_backend() == 'cpu'
    self.n = n or (2048 if on_cpu else 8192)
    self.dtype = 'float32' if on_cpu else 'bfloat16'
    self.flops = 2.0 * self.n**3
    self.device_kind = jax.devices()[0].device_kind
    self.nominal = (None if on_cpu else
                    next((v for k, v in NOMINAL_PEAKS.items() if k in self.device_kind), None))
    self.calls = {'peak:xla': jax_side.matmul_peak(self.n, self.dtype)}
    if torch_device:
      import torch  # pylint: disable=g-import-not-at-top
      a = torch.randn(self.n, self.n, device=torch_device, dtype=getattr(torch, self.dtype))
      sync = torch.cuda.synchronize if torch_device == 'cuda' else (lambda: None)
      self.calls['peak:torch'] = lambda: (torch.mm(a, a), sync())
    for fn in self.calls.values():
      fn()
      fn()

  def summary(self, times: dict[str, list[float]]) -> dict[str, Any]:
    per = {k.split(':')[1]: self.flops / statistics.median(times[k]) for k in self.calls}
    return {'n': self.n, 'dtype': self.dtype, 'device_kind': self.device_kind,
            'flops_per_s': per, 'peak_flops_per_s': max(per.values()),
            'nominal_peak_flops_per_s': self.nominal,
            'times_s': {k: times[k] for k in self.calls}}


def measure_peak(probe: PeakProbe, rounds: int) -> dict[str, Any]:
  """The matmul peak alone (before the suites), XLA and PyTorch interleaved."""
  return probe.summary(interleave(probe.calls, rounds))


def _warm(name: str, fn: Callable[[], Any], warmup: int) -> dict[str, Any]:
  first = _timed(fn)
  rest = [_timed(fn) for _ in range(max(0, warmup - 1))]
  _log(f'  {name}: first step {first:.2f} s, warm-up {[round(t, 2) for t in rest]}')
  return {'first_step_s': first, 'warmup_s': rest}


def _torch_setup(torch_device: str | None, dtype: str) -> tuple[str | None, Any, str | None]:
  """``(device or None, autocast dtype or None, why skipped or None)``."""
  import torch  # pylint: disable=g-import-not-at-top
  if torch_device == 'cuda' and not torch.cuda.is_available():
    return None, None, ('torch has no CUDA here (torch %s); the PyTorch columns need a CUDA '
                        'build of torch' % torch.__version__)
  autocast = torch.bfloat16 if dtype == 'bfloat16' else None
  return torch_device, autocast, None


def _time_columns(suite: str, steps: dict[str, Callable[[], Any]], info: dict[str, Any], *,
                  warmup: int, rounds: int, items_per_step: float, flops: float,
                  probe: PeakProbe) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """Warms up and times ``steps`` interleaved with the peak probe.

  Returns ``(columns, load average, peak)``.
  """
  for name, fn in steps.items():
    info[name].update(_warm(name, fn, warmup))
  _log(f'{suite}: timing {list(steps)} interleaved (with the matmul peak probe), '
       f'{rounds} rounds')
  load = {'before': _loadavg()}
  cpu = {}
  times = interleave({**steps, **probe.calls}, rounds, cpu)
  load['after'] = _loadavg()
  peak = probe.summary(times)
  times = {k: v for k, v in times.items() if k in steps}
  summary = summarize(times, baseline='torch_eager', items_per_step=items_per_step,
                      flops_per_step=flops, peak_flops=peak['peak_flops_per_s'])
  base_cpu = cpu.get('torch_eager')
  for name, row in summary.items():
    row['cpu_median_s'] = statistics.median(cpu[name])
    if base_cpu:
      row['cpu_speedup_vs_torch_eager'] = statistics.median(base_cpu) / row['cpu_median_s']
  columns = {k: {**v, **summary.get(k, {}), 'times_s': times.get(k), 'cpu_times_s': cpu.get(k)}
             for k, v in info.items()}
  return columns, load, peak


def vision_suite(columns: list[str], *, teacher_name: str, student_name: str, batch: int,
                 dtype: str, warmup: int, rounds: int, workdir: str | None, probe: PeakProbe,
                 torch_device: str | None = 'cpu') -> dict[str, Any]:
  """Vision KD step: distill_jax vs PyTorch eager / torch.compile / torchdistill."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  for n in (teacher_name, student_name):
    if n not in torch_models.VISION_MODELS:
      raise ValueError(f'No PyTorch reference model for {n!r} '
                       f'(have {sorted(torch_models.VISION_MODELS)}).')
  unknown = set(columns) - set(VISION_COLUMNS)
  if unknown:
    raise ValueError(f'Unknown vision columns {sorted(unknown)}; choose from {VISION_COLUMNS}.')
  steps, info, flops = {}, {}, 0.0
  if 'distill_jax' in columns:
    _log(f'vision: building distill_jax {teacher_name} -> {student_name}, batch {batch} ({dtype})')
    ours = jax_side.vision_step(teacher=teacher_name, student=student_name, batch_size=batch,
                                dtype=dtype, workdir=workdir)
    steps['distill_jax'] = ours.step
    info['distill_jax'] = {'trace_lower_s': ours.trace_lower_s, 'compile_s': ours.compile_s,
                           'temp_bytes': ours.temp_bytes, 'num_params': ours.num_params,
                           **ours.info}
    flops = ours.flops
  device, autocast, why = _torch_setup(torch_device, dtype)
  images = torch.randn(batch, 3, 32, 32)
  labels = torch.randint(0, 100, (batch,))
  if device is not None:
    images, labels = images.to(device), labels.to(device)
  for name in columns:
    if name == 'distill_jax':
      continue
    if why:
      info[name] = {'skipped': why}
      continue
    torch.manual_seed(0)
    teacher = torch_models.VISION_MODELS[teacher_name]()
    student = torch_models.VISION_MODELS[student_name]()
    kw = dict(device=device, autocast=autocast)
    if name == 'torchdistill':
      try:
        import torchdistill  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        info[name] = {'skipped': f'torchdistill is not installed ({e}); pip install -e .[bench]'}
        _log(f'  {name}: skipped ({info[name]["skipped"]})')
        continue
      kd = torch_models.VisionKDStep(teacher, student, loss='torchdistill', **kw)
      info[name] = {'version': torchdistill.__version__}
    else:
      kd = torch_models.VisionKDStep(teacher, student, compile=name == 'torch_compile', **kw)
      info[name] = {}
    info[name]['num_params'] = {'student': torch_models.num_params(student),
                                'teacher': torch_models.num_params(teacher)}
    steps[name] = (lambda kd=kd: kd(images, labels))
  timed = {k: v for k, v in info.items() if 'skipped' not in v}
  columns_out, load, peak = _time_columns('vision', steps, timed, warmup=warmup, rounds=rounds,
                                          items_per_step=batch, flops=flops, probe=probe)
  columns_out.update({k: v for k, v in info.items() if 'skipped' in v})
  return {'teacher': teacher_name, 'student': student_name, 'batch_size': batch,
          'flops_per_step': flops, 'flops_source': 'XLA cost_analysis() of the distill_jax step',
          'torch_device': device, 'columns': columns_out, 'loadavg': load, 'peak': peak}


def lm_suite(*, shapes, dtype: str, warmup: int, rounds: int, torch_compile: bool,
             probe: PeakProbe, torch_device: str | None = 'cpu') -> dict[str, Any]:
  """LM token-level KD step: distill_jax (fused loss, the default, and materialized
  ``[B, T, V]`` logits) vs PyTorch eager (and torch.compile)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  from distill_jax.data import text  # pylint: disable=g-import-not-at-top
  _log(f'lm: building distill_jax ({dtype}) {shapes}')
  built = {name: jax_side.lm_step(shapes, dtype=dtype, lm_logits=lm_logits) for name, lm_logits
           in (('distill_jax', 'auto'), ('distill_jax_materialized', 'materialized'))}
  ours = built['distill_jax']
  steps = {name: b.step for name, b in built.items()}
  info = {name: {'trace_lower_s': b.trace_lower_s, 'compile_s': b.compile_s,
                 'temp_bytes': b.temp_bytes, 'num_params': b.num_params, **b.info}
          for name, b in built.items()}
  device, autocast, why = _torch_setup(torch_device, dtype)
  skipped = {}
  names = ['torch_eager'] + (['torch_compile'] if torch_compile else [])
  if why:
    skipped = {name: {'skipped': why} for name in names}
  else:
    examples = shapes.batch_arrays()  # The same tokens and masks as ours.
    batch = text.make_lm_batch(examples['prompt'], examples['prompt_mask'],
                               examples['response'], examples['response_mask'])
    inputs = torch.tensor(batch['inputs'], dtype=torch.long, device=device)
    loss_mask = torch.tensor(batch['loss_mask'], dtype=torch.float32, device=device)
    for name in names:
      torch.manual_seed(0)
      teacher = torch_models.Llama(**shapes.llama_kwargs('teacher'))
      student = torch_models.Llama(**shapes.llama_kwargs('student'))
      kd = torch_models.LMKDStep(teacher, student, compile=name == 'torch_compile',
                                 device=device, autocast=autocast)
      steps[name] = (lambda kd=kd: kd(inputs, loss_mask))
      info[name] = {'num_params': {'student': torch_models.num_params(student),
                                   'teacher': torch_models.num_params(teacher)}}
  tokens = shapes.batch_size * shapes.seq_len
  # FLOP/s and MFU from the analytic matmul count: XLA's cost_analysis() counts the
  # fused loss's chunk loop body once.
  analytic = ours.info['analytic_flops']['total']
  columns_out, load, peak = _time_columns('lm', steps, info, warmup=warmup, rounds=rounds,
                                          items_per_step=tokens, flops=analytic, probe=probe)
  for row in columns_out.values():
    if peak['nominal_peak_flops_per_s']:
      row['mfu_nominal'] = analytic / row['median_s'] / peak['nominal_peak_flops_per_s']
  columns_out.update(skipped)
  return {'shapes': info['distill_jax']['shapes'], 'tokens_per_step': tokens,
          'flops_per_step': ours.flops,
          'flops_source': 'XLA cost_analysis() of the distill_jax step',
          'analytic_flops_per_step': analytic, 'torch_device': device,
          'columns': columns_out, 'loadavg': load, 'peak': peak}


def _machine() -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), cpu)
  except OSError:
    pass
  return {'platform': platform.platform(), 'cpu': cpu, 'cpus': os.cpu_count(),
          'python': sys.version.split()[0], 'jax': jax.__version__,
          'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
          'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')}


def _fmt(value, spec, scale=1.0):
  return '-' if value is None else format(value * scale, spec)


def _peak_line(results: dict[str, Any]) -> str:
  peak = results['peak']
  per = ', '.join(f'{"XLA" if k == "xla" else "PyTorch"} {v / 1e9:.0f}'
                  for k, v in peak['flops_per_s'].items())
  line = (f'measured {peak["dtype"]} matmul peak ({peak["n"]}^3) '
          f'{peak["peak_flops_per_s"] / 1e9:.0f} GFLOP/s ({per})')
  if peak.get('nominal_peak_flops_per_s'):
    line += f'; data-sheet peak {peak["nominal_peak_flops_per_s"] / 1e12:.0f} TFLOP/s'
  return line


def markdown(results: dict[str, Any]) -> str:
  m = results['machine']
  device = m['cpu'] + f', {m["cpus"]} CPUs' if m['backend'] == 'cpu' else results['peak']['device_kind']
  lines = [
      f'Machine: {device}; jax {m["jax"]} ({m["backend"]}), torch {m["torch"]}; '
      f'{_peak_line(results)}; {results["steps"]} interleaved rounds after '
      f'{results["warmup"]} warm-up steps; distill_jax dtype {results["dtype"]}.',
      '',
      '| suite | column | median step s (IQR) | items/s | GFLOP/s | % of peak | '
      'x torch eager (medians) | x torch eager (paired) | CPU s/step (x eager) | '
      'compile s | first step s |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for suite, unit in (('vision', 'img'), ('lm', 'tok')):
    if suite not in results:
      continue
    for name, c in results[suite]['columns'].items():
      if 'skipped' in c:
        lines.append(f'| {suite} | {name} | skipped: {c["skipped"]} | | | | | | | | |')
        continue
      compile_s = (c['trace_lower_s'] + c['compile_s'] if 'compile_s' in c else
                   c['first_step_s'] - c['median_s'] if name == 'torch_compile' else None)
      lines.append(
          f'| {suite} | {name} | {c["median_s"]:.3f} ({c["q1_s"]:.3f}-{c["q3_s"]:.3f}) | '
          f'{c["items_per_s"]:.0f} {unit} | {_fmt(c["flops_per_s"], ".0f", 1e-9)} | '
          f'{_fmt(c["mfu"], ".1f", 100)} | {_fmt(c.get("speedup_vs_torch_eager"), ".2f")} | '
          f'{_fmt(c.get("paired_speedup_vs_torch_eager"), ".2f")} | '
          f'{c["cpu_median_s"]:.2f} ({_fmt(c.get("cpu_speedup_vs_torch_eager"), ".2f")}) | '
          f'{_fmt(compile_s, ".1f")} | {c["first_step_s"]:.2f} |')
  if 'lm' in results:
    lm = results['lm']
    ours = lm['columns']['distill_jax']
    materialized = lm['columns'].get('distill_jax_materialized')
    if materialized:
      lines.append(
          f'\nlm temp bytes (XLA memory_analysis): fused {ours["temp_bytes"] / 2**20:.0f} MiB, '
          f'materialized {materialized["temp_bytes"] / 2**20:.0f} MiB '
          f'({ours["temp_bytes"] / materialized["temp_bytes"]:.3f}); step time fused / '
          f'materialized {ours["median_s"] / materialized["median_s"]:.3f} (medians).')
    lines.append(
        f'\nlm model FLOPs/step: {lm["analytic_flops_per_step"] / 1e9:.1f} G (analytic matmul '
        f'count: the GFLOP/s and % of peak columns), {lm["flops_per_step"] / 1e9:.1f} G (XLA '
        f'cost_analysis, which counts a loop body once); distill_jax MFU '
        f'{100 * ours["mfu"]:.1f}% of the measured peak' +
        (f', {100 * ours["mfu_nominal"]:.1f}% of the data-sheet peak'
         if 'mfu_nominal' in ours else '') + '.')
  for suite in ('vision', 'lm'):
    if suite in results:
      block = results[suite]
      load = {k: v and v[0] for k, v in block['loadavg'].items()}
      peak = block['peak']
      per = ', '.join(f'{k} {v / 1e9:.0f}' for k, v in peak['flops_per_s'].items())
      lines.append(f'\n{suite}: "% of peak" is against the matmul peak timed in the same '
                   f'rounds: {peak["peak_flops_per_s"] / 1e9:.0f} GFLOP/s ({per}); 1-min load '
                   f'average {_fmt(load["before"], ".2f")} before / {_fmt(load["after"], ".2f")} '
                   f'after the timed rounds (this process alone adds '
                   f'~{m["cpus"] if m["backend"] == "cpu" else 1}).')
  return '\n'.join(lines)


def run(*, suites, steps, warmup, vision_columns, vision_teacher='resnet32x4',
        vision_student='resnet8x4', vision_batch=64, dtype='float32', lm_shapes=None,
        lm_torch_compile=False, peak_matmul_n=0, workdir='', out='benchmarks/results/kd_step',
        torch_device='cpu', torch_threads=0) -> dict[str, Any]:
  """Runs the suites and writes ``out + '.json'`` and ``out + '.md'``."""
  import torch  # pylint: disable=g-import-not-at-top
  threads = torch.get_num_threads()
  if torch_threads:
    torch.set_num_threads(torch_threads)
  try:
    return _run(suites=suites, steps=steps, warmup=warmup, vision_columns=vision_columns,
                vision_teacher=vision_teacher, vision_student=vision_student,
                vision_batch=vision_batch, dtype=dtype, lm_shapes=lm_shapes,
                lm_torch_compile=lm_torch_compile, peak_matmul_n=peak_matmul_n,
                workdir=workdir, out=out, torch_device=torch_device)
  finally:
    torch.set_num_threads(threads)


def _run(*, suites, steps, warmup, vision_columns, vision_teacher, vision_student,
         vision_batch, dtype, lm_shapes, lm_torch_compile, peak_matmul_n, workdir, out,
         torch_device) -> dict[str, Any]:
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  results = {'machine': _machine(), 'steps': steps, 'warmup': warmup, 'dtype': dtype}
  _log(f'machine: {results["machine"]}')
  _, _, why = _torch_setup(torch_device, dtype)
  probe = PeakProbe(peak_matmul_n, None if why else torch_device)
  results['peak'] = measure_peak(probe, rounds=max(5, min(steps, 10)))
  _log(f'matmul peak {results["peak"]["peak_flops_per_s"] / 1e9:.0f} GFLOP/s '
       f'{results["peak"]["flops_per_s"]}')
  if 'vision' in suites:
    results['vision'] = vision_suite(vision_columns, teacher_name=vision_teacher,
                                     student_name=vision_student, batch=vision_batch,
                                     dtype=dtype, warmup=warmup, rounds=steps,
                                     workdir=workdir or None, probe=probe,
                                     torch_device=torch_device)
  if 'lm' in suites:
    results['lm'] = lm_suite(shapes=lm_shapes or jax_side.LMShapes(), dtype=dtype,
                             warmup=warmup, rounds=steps, torch_compile=lm_torch_compile,
                             probe=probe, torch_device=torch_device)
  report.write(out, results, markdown(results))
  return results


def parse_shapes(text: str, preset: str = ''):
  """``LMShapes`` from a preset name and ``key=value,...`` integer overrides."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  if preset not in jax_side.LM_PRESETS:
    raise ValueError(f'--lm_preset={preset!r}; choose from {sorted(jax_side.LM_PRESETS)}.')
  fields = {f.name for f in dataclasses.fields(jax_side.LMShapes)}
  overrides = dict(jax_side.LM_PRESETS[preset])
  for item in filter(None, text.split(',')):
    key, _, value = item.partition('=')
    if key not in fields:
      raise ValueError(f'--lm_shapes: unknown field {key!r}; fields: {sorted(fields)}.')
    overrides[key] = int(value)
  return jax_side.LMShapes(**overrides)


def main(argv):
  del argv
  steps, warmup, columns = FLAGS.steps, FLAGS.warmup, list(FLAGS.vision_columns)
  lm_compile = FLAGS.lm_torch_compile
  if FLAGS.quick:
    steps, warmup = min(steps, 5), min(warmup, 2)
    columns = [c for c in columns if c != 'torch_compile']
    lm_compile = False
  out = FLAGS.out or os.path.join('benchmarks', 'results',
                                  'kd_step_quick' if FLAGS.quick else 'kd_step')
  run(suites=FLAGS.suites, steps=steps, warmup=warmup, vision_columns=columns,
      vision_teacher=FLAGS.vision_teacher, vision_student=FLAGS.vision_student,
      vision_batch=FLAGS.vision_batch, dtype=FLAGS.dtype,
      lm_shapes=parse_shapes(FLAGS.lm_shapes, FLAGS.lm_preset), lm_torch_compile=lm_compile,
      peak_matmul_n=FLAGS.peak_matmul_n, workdir=FLAGS.workdir, out=out,
      torch_device=FLAGS.torch_device, torch_threads=FLAGS.torch_threads)


def _define_flags():
  """Command-line flags (defined only when run as a script: importing stays side-effect free)."""
  flags.DEFINE_bool('quick', False, '5 timed steps, 2 warm-up, no torch.compile columns.')
  flags.DEFINE_list('suites', ['vision', 'lm'], 'Suites to run: vision, lm.')
  flags.DEFINE_integer('steps', 20, 'Timed (interleaved) rounds per suite.')
  flags.DEFINE_integer('warmup', 3, 'Untimed warm-up steps per column (the first is recorded).')
  flags.DEFINE_list('vision_columns', ['distill_jax', 'torch_eager', 'torch_compile', 'torchdistill'],
                    'Vision columns.')
  flags.DEFINE_string('vision_teacher', 'resnet32x4', 'Vision teacher (registry name).')
  flags.DEFINE_string('vision_student', 'resnet8x4', 'Vision student (registry name).')
  flags.DEFINE_integer('vision_batch', 64, 'Vision batch size.')
  flags.DEFINE_string('dtype', 'float32', 'distill_jax compute dtype (float32 | bfloat16).')
  flags.DEFINE_bool('lm_torch_compile', False, 'Add a torch.compile column to the LM suite.')
  flags.DEFINE_string('lm_shapes', '', 'Overrides of benchmarks.jax_side.LMShapes, '
                      'e.g. "vocab_size=512,seq_len=32".')
  flags.DEFINE_string('lm_preset', '', 'LM shapes preset: "" (the CPU shapes above) or '
                      'smollm2_135m (SmolLM2-135M teacher -> 4 x 256 student, vocab 49152, '
                      'batch 16 x 2048; the accelerator check), smollm2_kd (the same teacher '
                      '-> 16 x 384 student, batch 8 x 512). --lm_shapes applies on top.')
  flags.DEFINE_integer('peak_matmul_n', 0, 'Size of the matmul that measures the peak '
                       '(0: 2048 on CPU, 8192 on GPU).')
  flags.DEFINE_integer('torch_threads', 0, 'torch.set_num_threads (0: PyTorch default, '
                       'one per core).')
  flags.DEFINE_string('torch_device', 'cpu', 'PyTorch device: cpu | cuda (torch columns are '
                      'skipped when CUDA is asked for and unavailable).')
  flags.DEFINE_string('workdir', '', 'Scratch dir (fake CIFAR-100, teacher run); default: a temp dir.')
  flags.DEFINE_string('out', '', 'Output path without extension (default benchmarks/results/kd_step).')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
