"""experiments/smollm2_quickstart.py (``make demo``) end to end on a tiny teacher.

Both runs train, report and the table is written; the pruned and the
from-scratch students share one architecture; the distilled student is
exported in both formats; a rerun reuses the finished runs.
"""

import json
import os
import subprocess
import sys

from tests.llm.conftest import random_variables, tiny_config, write_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _quickstart(tmp_path, teacher):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.smollm2_quickstart', f'--teacher={teacher}',
       '--runlocal', '--steps=2', '--hidden=16', '--ffn=32', '--kv_heads=1',
       f'--workdir={tmp_path / "runs"}', f'--results_dir={tmp_path / "results"}'],
      capture_output=True, text=True, check=False, cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': ROOT})


def test_quickstart_end_to_end(tmp_path):
  teacher = str(tmp_path / 'teacher.gguf')
  write_gguf(teacher, tiny_config(), random_variables(tiny_config(), seed=1))
  done = _quickstart(tmp_path, teacher)
  assert done.returncode == 0, done.stderr[-3000:]
  table = open(tmp_path / 'results' / 'smollm2_quickstart.md').read()
  assert '| held-out perplexity |' in table and 'student from scratch (CE)' in table
  saved = json.load(open(tmp_path / 'results' / 'smollm2_quickstart.json'))
  models = {name: saved['runs'][name]['report']['models']['student']
            for name in ('scratch', 'distilled')}
  assert models['scratch']['parameters'] == models['distilled']['parameters']
  assert models['distilled']['parameters'] < saved['runs']['distilled']['report']['models'][
      'teacher']['parameters']
  assert os.path.isfile(tmp_path / 'runs' / 'student_hf' / 'model.safetensors')
  assert os.path.isfile(tmp_path / 'runs' / 'student_q8_0.gguf')
  again = _quickstart(tmp_path, teacher)
  assert again.returncode == 0 and 'reusing the finished run' in again.stdout
