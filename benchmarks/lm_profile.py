"""Where the LM KD step's time goes on CPU: thread time by kind of work.

  python -m benchmarks.lm_profile            # ~2 min on 2 cores

Builds ``benchmarks.jax_side.lm_step`` (the ``benchmarks.run`` LM suite:
teacher 8 x 512, student 4 x 256, sequence 256, vocabulary 32k, batch 8,
token-level forward KL, AdamW; float32), traces 3 steps and sums the XLA:CPU
thread time per category: the vocabulary projections (teacher and student
logits, the two student gradients of the tied embedding), the other matmuls
(attention and MLP, forward and backward), vocabulary-wide elementwise work
(softmax / log-softmax / KL over ``[tokens, vocab]``), layout copies, the
rest. Writes ``benchmarks/results/lm_profile.{json,md}``.
"""

import collections
import dataclasses
import os
import re
import sys

from benchmarks import report
from benchmarks import xla_trace

OUT = os.path.join(os.path.dirname(__file__), 'results', 'lm_profile')


def category(name: str, ins: dict[str, str], vocab_size: int) -> str:
  """The kind of work of one profiled thunk (named after its HLO instruction)."""
  op, shape = ins.get('op', ''), ins.get('shape', '')
  # The fused loss's chunk loop (a while body) or a [.., V] shape: vocabulary-wide work.
  vocabulary = '/while/body/' in op or str(vocab_size) in re.findall(r'\d+', shape.split('{')[0])
  if 'dot_general' in op or ins.get('kind') == 'dot':
    return ('vocabulary projections (logits and their gradients)'
            if vocabulary or 'embed.attend' in op
            else 'other matmuls (attention, MLP; forward and backward)')
  if name.startswith(('transpose', 'copy')) or ins.get('kind') in ('transpose', 'copy'):
    return 'layout transposes / copies'
  if vocabulary:
    return 'vocabulary-wide softmax / KL elementwise'
  return 'other (norms, RoPE, attention softmax, optimizer, embedding gather)'


def main() -> None:
  from benchmarks import jax_side  # pylint: disable=g-import-not-at-top
  shapes = jax_side.LMShapes()
  step = jax_side.lm_step(shapes)
  info = xla_trace.instructions(step.hlo_text)
  per_op, wall = xla_trace.thread_time_per_op(step.step)
  per_cat = collections.Counter()
  for name, seconds in per_op.items():
    per_cat[category(name, info.get(name, {}), shapes.vocab_size)] += seconds
  total = sum(per_cat.values())
  result = {'shapes': dataclasses.asdict(shapes),
            'xla_flags': os.environ.get('XLA_FLAGS', ''), 'loadavg': os.getloadavg(),
            'wall_s_per_step_traced': wall, 'thread_s_per_step': total,
            'categories': {k: {'s': v, 'share': v / total} for k, v in per_cat.most_common()}}
  lines = [f'LM KD step (`python -m benchmarks.lm_profile`): {wall:.2f} s wall per step while '
           f'traced, {total:.2f} thread-s named by XLA; 1-min load {result["loadavg"][0]:.1f}.',
           '', '| category | thread s / step | share |', '|---|---|---|']
  lines += [f'| {k} | {v["s"]:.2f} | {100 * v["share"]:.0f}% |'
            for k, v in result['categories'].items()]
  report.write(OUT, result, '\n'.join(lines))


if __name__ == '__main__':
  if xla_trace.TRACEME_FLAG not in os.environ.get('XLA_FLAGS', ''):
    # XLA reads XLA_FLAGS once, at backend start: restart with the trace flag.
    env = dict(os.environ, XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} '
               f'{xla_trace.TRACEME_FLAG}'.strip())
    os.execve(sys.executable, [sys.executable, '-m', 'benchmarks.lm_profile'], env)
  main()
