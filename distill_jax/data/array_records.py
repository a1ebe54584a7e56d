"""ArrayRecord files checked before they are read: a missing, truncated or
damaged file is one error naming it, not an array_record error at the first read."""

import os

from array_record.python import array_record_module
from etils import epath

from distill_jax.data import errors


def num_records(path: str, remedy: str) -> int:
  """The number of records of ArrayRecord file ``path``, read from its footer.

  Args:
    path: the file.
    remedy: how to make the file again, the end of an error's message.

  Raises:
    FileNotFoundError: ``path`` is missing.
    errors.DamagedFileError: ``path`` is truncated, damaged or no ArrayRecord file.
  """
  file = epath.Path(path)
  if not file.exists():
    raise FileNotFoundError(f'{path} is missing. {remedy}')
  reader = array_record_module.ArrayRecordReader(os.fspath(path))
  count = reader.num_records()
  try:
    reader.close()  # A reader that could not read the footer raises its error here.
  except RuntimeError as e:
    detail = f'; array_record: {e}' if str(e) else ''
    raise errors.DamagedFileError(
        f'{path} is truncated or damaged ({file.stat().length:,} bytes{detail}). '
        f'{remedy}') from None
  return count
