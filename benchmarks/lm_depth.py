"""Depth scaling of the LM KD step: compile time scanned vs unrolled, temp bytes by remat policy.

  nice python -m benchmarks.lm_depth [--layers=4,16,32]   # ~15 min on 2 cores

For every depth ``L`` the framework's LM KD step (``benchmarks.jax_side.lm_step``:
``token_kl``, AdamW, the CPU shapes of ``benchmarks.run``'s LM suite with both
teacher and student ``L`` blocks deep) is compiled twice, its blocks unrolled
(``layers_<i>``) and scanned (``LlamaConfig.scan_layers``), and we record trace +
lowering seconds, XLA compile seconds (JAX's own compile events; wall time, so
the machine load is written beside them), XLA's ``memory_analysis()`` temp
bytes and the optimized HLO's size. At the deepest ``L`` the scanned step is
also compiled with the student's ``remat`` = ``full`` and ``save_dots``; temp
bytes are deterministic. Last, the SmolLM2-135M KD step (``--kd_preset``,
``benchmarks.run``'s ``smollm2_kd`` shapes, scanned) with the fused and the
materialized loss, without and with ``remat=full``: how much of the step's temp
memory the logits are once the activations are rematerialized. Writes
``benchmarks/results/lm_depth.{json,md}``.
"""

import dataclasses
import os

from absl import app
from absl import flags

from benchmarks import jax_side
from benchmarks import report

flags.DEFINE_list('layers', ['4', '16', '32'], 'Depths (teacher and student blocks).')
flags.DEFINE_string('kd_preset', 'smollm2_kd', 'LM_PRESETS entry of the fused vs '
                    'materialized rows ("" = skip them).')
flags.DEFINE_string('out', os.path.join(os.path.dirname(__file__), 'results', 'lm_depth'),
                    'Output path without extension.')
FLAGS = flags.FLAGS


def measure(layers: int, scan: bool, remat: str = 'none', lm_logits: str = 'auto',
            preset: str = '') -> dict:
  shapes = jax_side.LMShapes(**jax_side.LM_PRESETS[preset])
  if not preset:
    shapes = dataclasses.replace(shapes, teacher_layers=layers, student_layers=layers)
  step = jax_side.lm_step(shapes, scan_layers=scan, remat=remat, lm_logits=lm_logits)
  return {'preset': preset, 'layers': shapes.student_layers, 'scan_layers': scan,
          'remat': remat, 'lm_logits': lm_logits,
          'trace_lower_s': step.trace_lower_s, 'compile_s': step.compile_s,
          'temp_bytes': step.temp_bytes, 'hlo_chars': len(step.hlo_text),
          'loadavg': list(os.getloadavg())}


def markdown(rows: list[dict]) -> str:
  lines = ['| shapes | layers | blocks | remat | loss | trace+lower s | compile s | temp MiB | '
           'HLO chars | 1-min load |', '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    loss = 'fused' if r['lm_logits'] == 'auto' else r['lm_logits']
    lines.append(f'| {r["preset"] or "cpu"} | {r["layers"]} | '
                 f'{"scanned" if r["scan_layers"] else "unrolled"} | {r["remat"]} | {loss} | '
                 f'{r["trace_lower_s"]:.1f} | {r["compile_s"]:.1f} | '
                 f'{r["temp_bytes"] / 2**20:.0f} | {r["hlo_chars"]:,} | {r["loadavg"][0]:.2f} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  depths = [int(x) for x in FLAGS.layers]
  runs = [(layers, scan, 'none', 'auto', '') for layers in depths for scan in (False, True)]
  runs += [(depths[-1], True, remat, 'auto', '') for remat in ('full', 'save_dots')]
  if FLAGS.kd_preset:
    runs += [(0, True, remat, lm_logits, FLAGS.kd_preset) for remat in ('none', 'full')
             for lm_logits in ('auto', 'materialized')]
  rows = []
  for run in runs:
    rows.append(measure(*run))
    print(markdown(rows[-1:]).splitlines()[-1], flush=True)
  report.write(FLAGS.out, {'shapes': dataclasses.asdict(jax_side.LMShapes()), 'rows': rows},
               markdown(rows))


if __name__ == '__main__':
  app.run(main)
