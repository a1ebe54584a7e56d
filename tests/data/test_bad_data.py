"""Bad data: a split name that is not the data set's, and a prepared file that is
missing, truncated or another one, each one error naming the key or the file
(and the folder to delete to prepare it again), before any example is read."""

import glob
import os
import shutil

import pytest

from distill_jax import data
from distill_jax.data import array_records
from distill_jax.data import errors
from distill_jax.data import sources


def test_unknown_split_names_the_key_and_the_splits_before_any_file_is_read(
    digits_dir, monkeypatch):
  monkeypatch.setattr(array_records, 'num_records',
                      lambda *args: pytest.fail('a data file was opened'))
  with pytest.raises(ValueError) as e:
    data.check_split('digits', 'tset', digits_dir, key='data.eval_split')
  assert str(e.value) == (
      "data.eval_split='tset': data set 'digits' has no split 'tset'; its splits are "
      "'train', 'test' (tfds slices and sums of them work too, e.g. 'train[:90%]', "
      "'train+test').")
  data.check_split('digits', 'train[:10%]+test', digits_dir, key='data.eval_split')
  with pytest.raises(ValueError, match=r"^split='tain\+test': data set 'digits' has no split "
                                       "'tain';"):
    data.num_examples('digits', 'tain+test', digits_dir)


def _truncate(path, _):
  os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize('damage, error, message', [
    (_truncate, errors.DamagedFileError, '{test} is truncated or damaged ('),
    (lambda test, train: shutil.copy(train, test), errors.DamagedFileError,
     '{test} holds 1437 records; the data set info says 360.'),
    (lambda test, _: os.remove(test), FileNotFoundError, '{test} is missing.'),
], ids=['truncated', 'another_file', 'missing'])
def test_a_damaged_prepared_file_is_named_with_the_folder_to_delete(
    digits_dir, tmp_path, damage, error, message):
  data_dir = str(tmp_path / 'data')
  shutil.copytree(digits_dir, data_dir)
  variant = os.fspath(sources.resolve('digits', data_dir).builder.data_dir)
  test, train = (glob.glob(os.path.join(variant, f'*-{split}.array_record-*'))[0]
                 for split in ('test', 'train'))
  damage(test, train)
  with pytest.raises(error) as e:
    data.num_examples('digits', 'test', data_dir)
  assert str(e.value).startswith(message.format(test=test))
  assert str(e.value).endswith(
      f"Delete {variant} (the prepared data set 'sklearn_digits') to prepare it again; "
      'to get it: `pip install scikit-learn` (offline, prepared automatically).')
  shutil.rmtree(variant)
  assert data.num_examples('digits', 'test', data_dir) == 360  # Prepared again.
