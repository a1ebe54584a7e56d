"""born_again: generation k is distilled from generation k-1; the chain is one command."""

import json
import os
import signal

import pytest

from distill_jax import checkpoint
from distill_jax import train


def _ban(small_config, data_dir, **overrides):
  return small_config(data_dir, **{'method.name': 'kd', 'scheme.name': 'born_again',
                                   'scheme.generations': 2, **overrides})


def test_each_generation_is_taught_by_the_previous_one(small_config, data_dir, tmp_path):
  results = train.run(_ban(small_config, data_dir), str(tmp_path / 'chain'))
  gens = [os.path.join(tmp_path, 'chain', f'gen{k}') for k in range(3)]
  assert [g['workdir'] for g in results['generations']] == gens
  assert checkpoint.read_config(gens[0])['method']['name'] == 'ce'
  assert checkpoint.read_config(gens[0])['teacher']['workdir'] == ''
  for k in (1, 2):
    saved = checkpoint.read_config(gens[k])
    assert saved['teacher']['workdir'] == gens[k - 1] and saved['method']['name'] == 'kd'
    assert saved['seed'] == k and saved['scheme']['name'] == 'offline'
    # The generation's own run evaluated its teacher, generation k-1 (in bfloat16,
    # the teacher default; the chain evaluates generations in float32).
    with open(os.path.join(gens[k], 'results.json')) as f:
      teacher_accuracy = json.load(f)['eval']['teacher_accuracy']
    assert teacher_accuracy == pytest.approx(results['eval'][f'gen{k - 1}_accuracy'], abs=0.01)
  assert {'gen0_accuracy', 'gen2_accuracy', 'ensemble_accuracy'} <= set(results['eval'])
  # A rerun resumes: nothing is retrained and the figures are the same.
  again = train.run(_ban(small_config, data_dir), str(tmp_path / 'chain'))
  assert again['eval'] == results['eval']


def test_an_existing_generation_zero_is_used(small_config, data_dir, digits_teachers, tmp_path):
  results = train.run(_ban(small_config, data_dir, **{
      'scheme.generations': 1, 'scheme.first_generation': digits_teachers['mlp']}),
      str(tmp_path / 'chain'))
  assert results['generations'][0]['workdir'] == digits_teachers['mlp']
  assert not os.path.exists(tmp_path / 'chain' / 'gen0')


@pytest.mark.parametrize('overrides, error, message', [
    ({'scheme.first_generation': '/no/such/run'}, FileNotFoundError, 'No config.json'),
    ({'scheme.generations': 0}, ValueError, 'integer >= 1'),
    ({'method.name': 'ce'}, ValueError, 'uses no teacher'),
])
def test_bad_chains_fail_before_training(overrides, error, message, small_config, data_dir,
                                         tmp_path):
  config = _ban(small_config, data_dir, **overrides)
  if overrides.get('method.name') == 'ce':
    config.method = {'name': 'ce'}
  with pytest.raises(error, match=message):
    train.run(config, str(tmp_path / 'chain'))
  assert not os.path.exists(tmp_path / 'chain')


def test_generation_without_checkpoint(small_config, data_dir, tmp_path):
  os.makedirs(tmp_path / 'empty')
  checkpoint.write_config(str(tmp_path / 'empty'), small_config(data_dir))
  with pytest.raises(FileNotFoundError, match='has no checkpoint'):
    train.run(_ban(small_config, data_dir, **{'scheme.first_generation': str(tmp_path / 'empty')}),
              str(tmp_path / 'chain'))


def test_a_preempted_generation_stops_the_chain_and_the_rerun_resumes(
    small_config, data_dir, tmp_path, monkeypatch):
  """SIGTERM while generation 1 starts: the chain stops there (gen2 never starts),
  its results.json says so, and rerunning finishes the chain."""
  original, builds = train.build, []

  def build_then_sigterm(config, *args, **kwargs):
    exp = original(config, *args, **kwargs)
    builds.append(config.seed)
    if config.seed == 1 and builds.count(1) == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # Handled: the notice is set, nothing dies.
    return exp
  monkeypatch.setattr(train, 'build', build_then_sigterm)
  chain = str(tmp_path / 'chain')
  results = train.run(_ban(small_config, data_dir), chain)
  assert results['preempted'] is True
  assert results['generation_workdir'] == os.path.join(chain, 'gen1')
  assert json.load(open(os.path.join(chain, 'results.json')))['preempted'] is True
  assert not os.path.exists(os.path.join(chain, 'gen2'))
  monkeypatch.setattr(train, 'build', original)
  results = train.run(_ban(small_config, data_dir), chain)
  assert 'preempted' not in results and 'gen2_accuracy' in results['eval']
