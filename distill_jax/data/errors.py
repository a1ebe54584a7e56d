"""Errors of the data layer, written for people: what is missing, where, and how to get it."""


class DatasetUnavailableError(FileNotFoundError):
  """A data set is neither prepared in the data_dir nor preparable offline.

  The message names the data set, the data_dir that was searched and the ways
  to prepare it.
  """


class SourceNotInstalledError(DatasetUnavailableError):
  """The local files an offline builder reads are absent (package not installed)."""


class DamagedFileError(ValueError):
  """A data file is there but cannot be read whole (truncated or damaged).

  The message names the file, what is wrong with it and how to make it again.
  """
