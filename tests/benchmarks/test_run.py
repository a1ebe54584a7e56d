"""benchmarks/run.py's machinery at tiny shapes: every column runs, the JSON is complete.

The real measurement is ``python -m benchmarks.run`` (minutes); this checks
that the same code path builds the distill_jax steps through the framework
(``train.build`` / ``tasks.language_model.compile_lm``), the PyTorch references and
torchdistill's loss, times them interleaved and writes the result files.
"""

import importlib.util
import json
import math
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

torch = pytest.importorskip('torch')

from benchmarks import run as bench  # pylint: disable=g-import-not-at-top
from benchmarks import torch_models  # pylint: disable=g-import-not-at-top

TINY_LM = ('vocab_size=256,seq_len=16,batch_size=8,teacher_layers=1,teacher_hidden=32,'
           'teacher_ffn=64,teacher_heads=2,teacher_kv_heads=1,student_layers=1,'
           'student_hidden=16,student_ffn=32,student_heads=2,student_kv_heads=1,prompt_len=4')


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_reference_models_match_distill_jax_parameter_counts():
  from distill_jax import registry  # pylint: disable=g-import-not-at-top
  import distill_jax.models  # pylint: disable=unused-import,g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  for name in ('resnet32x4', 'resnet8x4', 'resnet8'):
    model = registry.get('models', name)(num_classes=100)
    params = jax.eval_shape(lambda k, m=model: m.init(k, jnp.zeros((1, 32, 32, 3)), train=False),
                            jax.random.PRNGKey(0))['params']
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == torch_models.num_params(torch_models.VISION_MODELS[name]()), name
  shapes = bench.parse_shapes(TINY_LM)
  for role in ('teacher', 'student'):
    torch_model = torch_models.Llama(**shapes.llama_kwargs(role))
    assert torch_models.num_params(torch_model) == shapes.config(role).num_params()


# torchdistill comes with the [bench] extra (make test installs [hf]: torch without it).
VISION_COLUMNS = ('distill_jax', 'torch_eager') + (
    ('torchdistill',) if importlib.util.find_spec('torchdistill') else ())


def test_run_writes_complete_results(tmp_path):
  out = str(tmp_path / 'kd_step')
  results = bench.run(
      suites=['vision', 'lm'], steps=2, warmup=1,
      vision_columns=list(VISION_COLUMNS),
      vision_teacher='resnet8', vision_student='resnet8', vision_batch=8,
      dtype='float32', lm_shapes=bench.parse_shapes(TINY_LM), lm_torch_compile=False,
      peak_matmul_n=128, workdir=str(tmp_path / 'work'), out=out, torch_threads=1)
  saved = json.load(open(out + '.json'))
  assert saved.keys() == results.keys()
  assert {'machine', 'peak', 'vision', 'lm', 'steps', 'warmup'} <= saved.keys()
  assert _positive(saved['peak']['peak_flops_per_s'])
  table = open(out + '.md').read()
  assert '| vision | distill_jax |' in table and '| lm | torch_eager |' in table

  for suite, columns in (('vision', VISION_COLUMNS),
                         ('lm', ('distill_jax', 'distill_jax_materialized', 'torch_eager'))):
    block = saved[suite]
    assert _positive(block['flops_per_step'])
    assert set(block['columns']) == set(columns)
    for name, col in block['columns'].items():
      assert len(col['times_s']) == 2, (suite, name)
      for key in ('median_s', 'q1_s', 'q3_s', 'items_per_s', 'flops_per_s', 'mfu', 'cpu_median_s',
                  'first_step_s', 'speedup_vs_torch_eager', 'paired_speedup_vs_torch_eager'):
        assert _positive(col[key]), (suite, name, key, col[key])
    ours = block['columns']['distill_jax']
    for key in ('trace_lower_s', 'compile_s', 'temp_bytes'):
      assert _positive(ours[key]), (suite, key)
    assert ours['donated_state'] is True
    assert block['columns']['torch_eager']['speedup_vs_torch_eager'] == 1.0
    assert ours['num_params'] == block['columns']['torch_eager']['num_params']
  assert _positive(saved['lm']['analytic_flops_per_step'])
  lm = saved['lm']['columns']
  assert (lm['distill_jax']['lm_logits'], lm['distill_jax_materialized']['lm_logits']) == (
      'auto', 'materialized')
  assert 'lm temp bytes (XLA memory_analysis): fused' in table
