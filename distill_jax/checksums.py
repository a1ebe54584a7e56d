"""Checksum manifests of saved folders: what a checkpoint wrote is what a run reads.

``write_manifest(folder)`` records the size and SHA-256 of every file in
``folder`` in ``folder/checksums.json``; ``verify(folder)`` says what no
longer matches (a file missing, truncated, grown or altered), and ``digest``
names a verified folder's contents by one hash (the manifest's own). The
checkpoints use them (``distill_jax.checkpoint``): the manifest is written
before orbax renames a finished save to its step folder, so every step folder
saved by this version holds one.
"""

import hashlib
import json
import os

MANIFEST = 'checksums.json'


def _files(folder: str, skip: tuple[str, ...] = ()) -> list[str]:
  """Relative paths of the files under ``folder`` (the manifest and ``skip``
  excluded), sorted."""
  found = []
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.relpath(os.path.join(root, name), folder)
      if path != MANIFEST and path not in skip:
        found.append(path)
  return sorted(found)


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def write_manifest(folder: str, skip: tuple[str, ...] = ()) -> None:
  """Writes ``folder/checksums.json``: ``{'files': {path: {'bytes', 'sha256'}}}``
  of every file but ``skip`` (relative paths of files that may still change)."""
  files = {path: {'bytes': os.path.getsize(os.path.join(folder, path)),
                  'sha256': _sha256(os.path.join(folder, path))}
           for path in _files(folder, skip)}
  temporary = os.path.join(folder, MANIFEST + '.tmp')
  with open(temporary, 'w') as f:
    json.dump({'algorithm': 'sha256', 'files': files}, f, indent=1, sort_keys=True)
  os.replace(temporary, os.path.join(folder, MANIFEST))


def has_manifest(folder: str) -> bool:
  return os.path.exists(os.path.join(folder, MANIFEST))


def verify(folder: str) -> str | None:
  """What in ``folder`` differs from its manifest (None: all files intact).

  A folder without a manifest is not verifiable: ``has_manifest`` tells.
  """
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      recorded = json.load(f)['files']
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f'its {MANIFEST} cannot be read ({e})'
  problems = []
  if not isinstance(recorded, dict):
    return f'its {MANIFEST} cannot be read (no file table)'
  for path, expected in sorted(recorded.items()):
    full = os.path.join(folder, path)
    if not (isinstance(expected, dict) and isinstance(expected.get('bytes'), int)
            and isinstance(expected.get('sha256'), str)):
      problems.append(f'its {MANIFEST} entry of {path} cannot be read ({expected!r})')
    elif not os.path.isfile(full):
      problems.append(f'{path} is missing')
    elif (size := os.path.getsize(full)) != expected['bytes']:
      problems.append(f'{path} is {"truncated" if size < expected["bytes"] else "longer"} '
                      f'({size:,} bytes, {expected["bytes"]:,} saved)')
    elif _sha256(full) != expected['sha256']:
      problems.append(f'{path} was altered (its SHA-256 differs from the saved one)')
  return '; '.join(problems) or None


def path_digest(path: str) -> str:
  """SHA-256 of a file, or of a folder's files (each relative path and SHA-256, sorted)."""
  if os.path.isfile(path):
    return _sha256(path)
  combined = hashlib.sha256()
  for name in _files(path):
    combined.update(f'{name} {_sha256(os.path.join(path, name))}\n'.encode())
  return combined.hexdigest()


def digest(folder: str) -> str | None:
  """One SHA-256 naming the folder's saved contents (of its manifest); None without one."""
  return _sha256(os.path.join(folder, MANIFEST)) if has_manifest(folder) else None
