"""Thread time per XLA:CPU thunk of a compiled step, from a ``jax.profiler`` trace.

Used by ``benchmarks.conv_profile`` (vision KD step) and
``benchmarks.lm_profile`` (LM KD step). XLA:CPU names its trace events after
the HLO instructions only when the process starts with
``--xla_cpu_enable_xprof_traceme=true`` in ``XLA_FLAGS`` (read once, when the
backend starts), so both run the traced step in a process started with it.
"""

import collections
import glob
import re
import tempfile
import time
from typing import Callable

TRACEME_FLAG = '--xla_cpu_enable_xprof_traceme=true'


def instructions(text: str) -> dict[str, dict[str, str]]:
  """name -> {'shape', 'kind' (opcode), 'op' (op_name metadata), 'args'} of every HLO instruction."""
  info = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%(\S+) = (\S+) ([a-z][a-z0-9\-]*)\((.*?)\)(.*)$', text,
                       re.M):
    op = re.search(r'op_name="([^"]*)"', m.group(5))
    info[m.group(1)] = {'shape': m.group(2), 'kind': m.group(3),
                        'op': op.group(1) if op else '', 'args': m.group(4)}
  return info


def thread_time_per_op(step: Callable[[], None], steps: int = 3
                       ) -> tuple[collections.Counter, float]:
  """Traces ``steps`` calls of ``step`` (after 2 untimed ones).

  Returns (thread seconds per step of each XLA thunk, by HLO instruction
  name; wall seconds per step while traced).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  step()
  step()
  trace_dir = tempfile.mkdtemp(prefix='xla_trace_')
  start = time.perf_counter()
  jax.profiler.start_trace(trace_dir)
  for _ in range(steps):
    step()
  jax.profiler.stop_trace()
  wall = (time.perf_counter() - start) / steps
  data = ProfileData.from_file(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True)[0])
  per_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if 'XLAEigen' not in line.name:
        continue
      for event in line.events:
        if event.name.startswith(('ThunkExecutor', 'SlinkyThreadPool', 'end:')):
          continue
        per_op[event.name] += event.duration_ns / steps / 1e9
  return per_op, wall
