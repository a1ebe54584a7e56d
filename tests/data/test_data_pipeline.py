"""train_batches / eval_batches: determinism, resume, per-host sharding, padding, speed."""

import itertools
import time

import numpy as np
import pytest

from distill_jax import data
from distill_jax.data import pipeline
from distill_jax.data import sources

N_TRAIN, N_TEST = 1437, 360  # digits


def _take(iterator, k):
  return list(itertools.islice(iterator, k))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _train(data_dir, **kwargs):
  kwargs = {'global_batch_size': 100, 'seed': 3, **kwargs}
  return data.train_batches('digits', data_dir=data_dir, **kwargs)


def test_epoch_permutation_is_pinned():
  # A pure function of (num, seed, epoch), independent of the NumPy version.
  assert pipeline.epoch_permutation(10, 0, 0).tolist() == [6, 7, 1, 2, 9, 0, 5, 8, 3, 4]
  assert pipeline.epoch_permutation(10, 0, 1).tolist() == [9, 6, 3, 7, 5, 1, 4, 0, 2, 8]
  assert pipeline.epoch_permutation(10, 1, 0).tolist() == [5, 4, 7, 1, 0, 2, 6, 3, 8, 9]
  perm = pipeline.epoch_permutation(N_TRAIN, 3, 5)
  assert sorted(perm.tolist()) == list(range(N_TRAIN))


def test_train_stream_is_the_documented_function_of_seed(digits_dir):
  images, labels = data.load_split('digits', 'train', digits_dir)
  steps_per_epoch = N_TRAIN // 100  # 14; the last 37 examples of each epoch are dropped.
  batches = _take(_train(digits_dir), 2 * steps_per_epoch + 2)
  for step, batch in enumerate(batches):
    assert batch['image'].shape == (100, 8, 8, 1) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (100,) and batch['label'].dtype == np.int32
    epoch, position = divmod(step, steps_per_epoch)
    index = pipeline.epoch_permutation(N_TRAIN, 3, epoch)[position * 100:(position + 1) * 100]
    np.testing.assert_array_equal(batch['image'], images[index])
    np.testing.assert_array_equal(batch['label'], labels[index])
  # Each epoch is reshuffled.
  assert not np.array_equal(batches[0]['image'], batches[steps_per_epoch]['image'])


def test_same_seed_same_stream_other_seed_other_stream(digits_dir):
  _assert_batches_equal(_take(_train(digits_dir), 5), _take(_train(digits_dir), 5))
  other = next(_train(digits_dir, seed=4))
  assert not np.array_equal(other['image'], next(_train(digits_dir))['image'])


@pytest.mark.parametrize('start_step', [1, 13, 14, 30])
def test_resume_yields_the_uninterrupted_batches(digits_dir, start_step):
  uninterrupted = _take(_train(digits_dir), start_step + 4)[start_step:]
  _assert_batches_equal(_take(_train(digits_dir, start_step=start_step), 4), uninterrupted)


def test_resume_does_not_replay(digits_dir):
  start = time.perf_counter()
  next(_train(digits_dir, start_step=10**9))  # Batch 10^9 directly.
  assert time.perf_counter() - start < 5


@pytest.mark.parametrize('process_count', [2, 4])
def test_processes_split_each_global_batch(digits_dir, process_count):
  global_batches = _take(_train(digits_dir), 16)
  per_process = [
      _take(_train(digits_dir, process_index=p, process_count=process_count), 16)
      for p in range(process_count)]
  for step, global_batch in enumerate(global_batches):
    parts = [per_process[p][step] for p in range(process_count)]
    for part in parts:
      assert part['image'].shape == (100 // process_count, 8, 8, 1)
    for key in ('image', 'label'):
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]),
                                    global_batch[key])


def test_bad_sharding_and_batch_arguments(digits_dir):
  with pytest.raises(ValueError, match='not divisible by process_count 3'):
    _train(digits_dir, process_count=3)
  with pytest.raises(ValueError, match='process_index'):
    _train(digits_dir, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='fewer than one global batch'):
    _train(digits_dir, global_batch_size=2048)


def test_streaming_reads_equal_in_memory_reads(digits_dir, monkeypatch):
  in_memory = _take(_train(digits_dir, start_step=12), 4)
  evals = list(data.eval_batches('digits', data_dir=digits_dir, global_batch_size=128))
  sources.clear_cache()
  monkeypatch.setattr(sources, 'IN_MEMORY_MAX_BYTES', 0)
  assert not sources.Examples('digits', 'train', digits_dir).in_memory
  _assert_batches_equal(_take(_train(digits_dir, start_step=12), 4), in_memory)
  _assert_batches_equal(
      list(data.eval_batches('digits', data_dir=digits_dir, global_batch_size=128)), evals)


def test_eval_pads_last_batch_and_masks_it(digits_dir):
  images, labels = data.load_split('digits', 'test', digits_dir)
  batches = list(data.eval_batches('digits', data_dir=digits_dir, global_batch_size=128))
  assert len(batches) == 3  # ceil(360 / 128)
  for batch in batches:
    assert batch['image'].shape == (128, 8, 8, 1) and batch['mask'].dtype == np.bool_
    assert batch['label'].dtype == np.int32
  assert [int(b['mask'].sum()) for b in batches] == [128, 128, 104]
  last = batches[-1]
  assert not last['mask'][104:].any() and not last['image'][104:].any()
  assert not last['label'][104:].any()
  # In order, exactly once each.
  real = {k: np.concatenate([b[k][b['mask']] for b in batches]) for k in ('image', 'label')}
  np.testing.assert_array_equal(real['image'], images)
  np.testing.assert_array_equal(real['label'], labels)
  assert data.num_examples('digits', 'test', digits_dir) == N_TEST


@pytest.mark.parametrize('process_count', [2, 8])
def test_eval_processes_split_each_global_batch(digits_dir, process_count):
  global_batches = list(data.eval_batches('digits', data_dir=digits_dir, global_batch_size=128))
  per_process = [
      list(data.eval_batches('digits', data_dir=digits_dir, global_batch_size=128,
                             process_index=p, process_count=process_count))
      for p in range(process_count)]
  assert all(len(batches) == len(global_batches) for batches in per_process)
  for step, global_batch in enumerate(global_batches):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(
          np.concatenate([per_process[p][step][key] for p in range(process_count)]),
          global_batch[key])
  total = sum(int(b['mask'].sum()) for batches in per_process for b in batches)
  assert total == N_TEST


def test_train_throughput(digits_dir):
  iterator = _train(digits_dir, global_batch_size=256)
  next(iterator)  # Warm up (decode once).
  start, count = time.perf_counter(), 0
  for batch in itertools.islice(iterator, 200):
    count += len(batch['label'])
  rate = count / (time.perf_counter() - start)
  assert rate > 20_000, f'{rate:.0f} examples/s'
