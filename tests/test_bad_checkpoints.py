"""Bad checkpoints: every save is sealed by a checksum manifest; a step that no
longer matches it is reported by path, moved aside, and the step before is used."""

import json
import os

import pytest

from distill_jax import checkpoint
from distill_jax import checksums
from distill_jax import train


def _largest_file(folder):
  files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
           if name != checksums.MANIFEST]
  return max(files, key=os.path.getsize)


@pytest.fixture
def two_step_run(data_dir, small_config, tmp_path):
  """A finished run with checkpoints at steps 2 and 4 (and its config)."""
  config = small_config(data_dir, **{'train.num_steps': 4, 'train.checkpoint_every_steps': 2,
                                     'train.keep_checkpoints': 2})
  workdir = str(tmp_path / 'run')
  train.run(config, workdir)
  return workdir, config


def test_every_save_is_sealed_and_verifies(two_step_run):
  workdir, _ = two_step_run
  for step in (2, 4):
    folder = os.path.join(workdir, 'checkpoints', str(step))
    assert checksums.has_manifest(folder)
    assert checksums.verify(folder) is None
  assert checkpoint.newest_verified(os.path.join(workdir, 'checkpoints')).step == 4


@pytest.mark.parametrize('damage, problem', [
    ('flip', 'was altered'), ('truncate', 'is truncated'), ('delete', 'is missing')])
def test_a_damaged_latest_step_is_moved_aside_and_the_one_before_resumed(
    two_step_run, capsys, damage, problem):
  workdir, config = two_step_run
  latest = os.path.join(workdir, 'checkpoints', '4')
  target = _largest_file(latest)
  if damage == 'flip':
    with open(target, 'r+b') as f:
      f.seek(os.path.getsize(target) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0xFF]))
  elif damage == 'truncate':
    os.truncate(target, os.path.getsize(target) // 2)
  else:
    os.remove(target)
  results = train.run(config, workdir)
  out = capsys.readouterr().out
  assert f'Checkpoint {latest} fails verification: ' in out and problem in out
  assert 'Resumed from the checkpoint at step 2' in out and 'verified, sha256' in out
  assert os.listdir(os.path.join(workdir, checkpoint.CORRUPT_DIR)) == ['4']
  assert results['steps'] == 4 and checksums.verify(latest) is None  # Step 4 saved again.
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_steps = [r['step'] for r in rows if 'train/loss' in r]
  assert train_steps == sorted(set(train_steps))  # No duplicated rows.


def test_no_step_verifies_is_one_error_listing_each(two_step_run):
  workdir, config = two_step_run
  for step in (2, 4):
    os.truncate(_largest_file(os.path.join(workdir, 'checkpoints', str(step))), 0)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'(?s)No checkpoint in .*checkpoints verifies:.*checkpoints/4: .*'
                           r'truncated.*checkpoints/2: .*Nothing was moved: move or delete '
                           r'them to start this run from scratch'):
    train.run(config, workdir)
  assert checkpoint.saved_steps(os.path.join(workdir, 'checkpoints')) == [4, 2]
  assert not os.path.exists(os.path.join(workdir, checkpoint.CORRUPT_DIR))


def test_a_teacher_skips_its_damaged_step(two_step_run, capsys):
  workdir, _ = two_step_run
  latest = os.path.join(workdir, 'checkpoints', '4')
  os.truncate(_largest_file(latest), 1)
  found = checkpoint.newest_verified(os.path.join(workdir, 'checkpoints'))
  assert found.step == 2 and len(found.sha256) == 64
  assert f'Checkpoint {latest} fails verification' in capsys.readouterr().out
  assert os.path.isdir(latest)  # Another run's checkpoint is left where it is.


def test_an_unreadable_manifest_and_an_unsealed_step(two_step_run, capsys):
  workdir, _ = two_step_run
  folder = os.path.join(workdir, 'checkpoints', '4')
  manifest = os.path.join(folder, checksums.MANIFEST)
  with open(manifest) as f:
    written = f.read()
  with open(manifest, 'w') as f:  # Valid JSON, one key altered.
    f.write(written.replace('"sha256": "', '"sha265": "', 1))
  assert 'checksums.json entry of ' in checksums.verify(folder)
  with open(manifest, 'w') as f:
    f.write('{"files": ')
  assert 'checksums.json cannot be read' in checksums.verify(folder)
  os.remove(manifest)
  found = checkpoint.newest_verified(os.path.join(workdir, 'checkpoints'))
  assert (found.step, found.sha256) == (4, None)
  assert 'has no checksums.json (saved before checksums were kept): using it unverified' in (
      capsys.readouterr().out)
