"""benchmarks/scale.py's machinery on a tiny Llama pair over 2 devices.

The real measurement is ``python -m benchmarks.scale`` (minutes); this checks
that the same code path compiles the LM distillation step from abstract
inputs for each layout, that FSDP holds fewer parameter bytes per device than
DP, and that the JSON / table / README section are complete.
"""

import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from benchmarks import scale  # pylint: disable=g-import-not-at-top
from distill_jax.llm.model import LlamaConfig  # pylint: disable=g-import-not-at-top

TINY = scale.LMPair(
    'tiny', teacher=LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                num_layers=2, num_heads=3, num_kv_heads=1),
    student=LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_layers=1,
                        num_heads=2, num_kv_heads=2),
    seq_len=8, batch_size=4)
ROW_FIELDS = ('pair', 'layout', 'devices', 'mesh', 'rules', 'student_params', 'student_opt_state',
              'teacher_variables', 'step_arguments', 'step_outputs', 'step_temp',
              'collectives', 'collective_bytes', 'involuntary_remat', 'compile_s')


def test_collective_stats_parses_hlo_lines():
  text = '\n'.join([
      '  %all-reduce.1 = f32[4,8]{1,0} all-reduce(f32[4,8]{1,0} %x), to_apply=%add',
      '  %ag = (f32[2]{0}, bf16[4]{0}) all-gather-start(%a, %b), dimensions={0}',
      '  %agd = f32[2]{0} all-gather-done(%ag)',
      '  %fusion = f32[4]{0} fusion(%all-reduce.1), calls=%fused'])
  counts, nbytes = scale.collective_stats(text)
  assert counts == {'all-reduce': 1, 'all-gather': 1, 'reduce-scatter': 0,
                    'collective-permute': 0, 'all-to-all': 0}
  assert nbytes['all-reduce'] == 128 and nbytes['all-gather'] == 16


def test_mesh_shapes():
  assert scale.mesh_shape('dp', 8) == {'data': 8, 'fsdp': 1, 'tensor': 1}
  assert scale.mesh_shape('fsdp', 8) == {'data': 1, 'fsdp': 8, 'tensor': 1}
  assert scale.mesh_shape('fsdp_tp', 8) == {'data': 1, 'fsdp': 4, 'tensor': 2}
  assert scale.mesh_shape('fsdp_tp', 1) == {'data': 1, 'fsdp': 1, 'tensor': 1}


def test_tiny_llama_on_two_devices(tmp_path):
  out = str(tmp_path / 'scale.json')
  results = scale.run([TINY], [2], layouts=('dp', 'fsdp'), out=out, log=lambda _: None)
  saved = json.load(open(out))
  assert saved['rows'] == json.loads(json.dumps(results['rows']))
  rows = {row['layout']: row for row in saved['rows']}
  assert set(rows) == {'dp', 'fsdp'}
  for row in rows.values():
    assert all(field in row for field in ROW_FIELDS), row.keys()
    assert set(row['collectives']) == set(scale.COLLECTIVES)
  dp, fsdp = rows['dp'], rows['fsdp']
  assert dp['mesh'] == {'data': 2, 'fsdp': 1, 'tensor': 1}
  assert fsdp['mesh'] == {'data': 1, 'fsdp': 2, 'tensor': 1}
  assert fsdp['student_params'] < dp['student_params']
  assert fsdp['student_opt_state'] < dp['student_opt_state']
  assert fsdp['teacher_variables'] < dp['teacher_variables']
  assert fsdp['step_arguments'] < dp['step_arguments']
  # Data parallel: gradients are averaged, nothing is gathered.
  assert dp['collectives']['all-reduce'] > 0 and dp['collectives']['all-gather'] == 0

  table = scale.markdown_table(saved)
  assert table.count('\n') == 1 + len(saved['rows'])
  readme = str(tmp_path / 'README.md')
  open(readme, 'w').write('# Benchmarks\n\nother text\n')
  for _ in range(2):  # The second call replaces the generated block.
    scale.update_readme(scale.generated_section(saved, 'cmd', [TINY]), readme)
  text = open(readme).read()
  assert text.count(scale.SECTION_TITLE) == 1 and text.count(scale.BEGIN) == 1
  assert 'other text' in text and '| tiny | fsdp | 2 |' in text
