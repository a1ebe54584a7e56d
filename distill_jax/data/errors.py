"""Errors of the data layer, written for people: what is missing, where, and how to get it."""


class DatasetUnavailableError(FileNotFoundError):
  """A data set is neither prepared in the data_dir nor preparable offline.

  The message names the data set, the data_dir that was searched and the ways
  to prepare it.
  """


class SourceNotInstalledError(DatasetUnavailableError):
  """The local files an offline builder reads are absent (package not installed)."""
