"""Bad teacher-logit caches: made with another tokenizer, incomplete, of no
sequence, or with a shard missing, truncated or replaced: one error naming the
file and how to rebuild it."""

import json
import os
import re
import shutil

import pytest

from distill_jax.data import errors
from distill_jax.data import logit_cache
from distill_jax.tools import cache_teacher_logits
from tests.data.cache_helpers import VOCAB, random_tokens, tokenizer_file, write


def test_tokenizer_mismatch_and_incomplete_cache(tmp_path):
  write(tmp_path, logit_cache.CacheSpec(k=8))
  with pytest.raises(logit_cache.TokenizerMismatchError, match='vocab_size=96.*hash'):
    logit_cache.LogitCache(str(tmp_path / 'cache'),
                           tokenizer=logit_cache.TokenizerInfo(VOCAB, 'sha256:other'))
  with pytest.raises(logit_cache.TokenizerMismatchError, match='vocab_size=50'):
    logit_cache.LogitCache(str(tmp_path / 'cache'), tokenizer=logit_cache.TokenizerInfo(
        50, logit_cache.tokenizer_hash(tokenizer_file(tmp_path))))
  os.remove(tmp_path / 'cache' / 'metadata.json')
  with pytest.raises(FileNotFoundError, match='metadata.json is missing'):
    logit_cache.LogitCache(str(tmp_path / 'cache'))
  with pytest.raises(ValueError, match='teacher outputs 96 classes but the tokenizer'):
    cache_teacher_logits.run(
        model='test_tiny_lm', model_kwargs={}, tokens=random_tokens(),
        tokenizer_files=[tokenizer_file(tmp_path)], vocab_size=100,
        out=str(tmp_path / 'other'), spec=logit_cache.CacheSpec(k=8),
        batch_size=4, init_seed=0)


def test_a_cache_of_no_sequence_is_refused_before_anything_is_written(tmp_path):
  out = tmp_path / 'empty'
  with pytest.raises(ValueError) as e:
    cache_teacher_logits.run(
        model='test_tiny_lm', model_kwargs={}, tokens=random_tokens(0),
        tokenizer_files=[tokenizer_file(tmp_path)], vocab_size=VOCAB, out=str(out),
        spec=logit_cache.CacheSpec(k=8), batch_size=4, init_seed=0)
  assert str(e.value) == (
      'write_cache: no sequence to cache (0 token batches, 0 sequences): the data, or a '
      f'limit on it, selected none; nothing was written to {out}.')
  assert not out.exists()


def test_an_empty_or_damaged_cache_is_one_error_naming_the_file(tmp_path):
  write(tmp_path, logit_cache.CacheSpec(k=8))  # 10 sequences, shards of 4, 4 and 2.
  cache = tmp_path / 'cache'
  meta = cache / 'metadata.json'
  rebuild = ('Rebuild the cache into a new directory with python -m '
             'distill_jax.tools.cache_teacher_logits.')
  written = meta.read_text()
  meta.write_text(json.dumps({**json.loads(written), 'shards': [], 'num_sequences': 0}))
  with pytest.raises(ValueError) as e:  # What a cache of 0 sequences used to be.
    logit_cache.LogitCache(str(cache))
  assert str(e.value) == (f'{meta}: the teacher-logit cache holds no sequence (its data '
                          f'selected none). {rebuild}')
  meta.write_text(written)
  first, last = cache / 'logits-00000.array_record', cache / 'logits-00002.array_record'
  last.rename(tmp_path / 'moved')
  with pytest.raises(FileNotFoundError) as e:
    logit_cache.LogitCache(str(cache))
  assert str(e.value) == f'{last} is missing. {rebuild}'
  shutil.copy(first, last)  # 4 sequences where 2 were.
  with pytest.raises(errors.DamagedFileError) as e:
    logit_cache.LogitCache(str(cache))
  assert str(e.value) == (f'Teacher-logit cache {cache}: its 3 shards hold 12 sequences, '
                          f'metadata.json says 10. {rebuild}')
  shard = cache / 'logits-00001.array_record'
  os.truncate(shard, os.path.getsize(shard) // 2)
  with pytest.raises(errors.DamagedFileError) as e:
    logit_cache.LogitCache(str(cache))
  assert str(e.value).startswith(f'{shard} is truncated or damaged (')
  assert str(e.value).endswith(rebuild)
  meta.write_text(written[:len(written) // 2])
  with pytest.raises(errors.DamagedFileError, match='^' + re.escape(
      f'{meta} is truncated or damaged (not JSON: ')):
    logit_cache.LogitCache(str(cache))


def test_a_cache_of_another_format_version_is_refused(tmp_path):
  write(tmp_path, logit_cache.CacheSpec(k=8))
  meta = tmp_path / 'cache' / 'metadata.json'
  meta.write_text(json.dumps({**json.loads(meta.read_text()), 'format_version': 7}))
  with pytest.raises(ValueError, match=re.escape(
      f'{meta}: cache format version 7; this distill_jax reads version 1. Rebuild')):
    logit_cache.LogitCache(str(tmp_path / 'cache'))
