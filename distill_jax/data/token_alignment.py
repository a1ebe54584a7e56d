"""Aligning two tokenizations of one text by character offsets (cross-tokenizer KD).

A teacher and a student with different tokenizers cut the same text into
different tokens. Their predictions can only be compared over pieces of text
both cut alike: **spans**, the shortest runs of consecutive tokens on each
side that end at the same character. A span boundary is a character position
where a token ends on both sides (GOLD's alignment, TRL), with one refinement:
a byte-level BPE token that ends *inside* a character (a multi-byte character
split over several tokens, which all report that character's offsets) is not
a boundary, so a span never separates the pieces of one character.

Offsets are ``(start, end)`` character positions in the text, as the
``tokenizers`` library returns them (``Encoding.offsets``); whitespace between
tokens (WordPiece drops it, byte-level BPE attaches it to the next token) does
not matter, only the ends do.

``token_spans`` numbers the spans of the text from a position ``start``
(e.g. where a prompt ends) and gives every token its span, ``-1`` for tokens
before ``start`` and after the last common boundary (a trailing piece the two
sides do not both cover).
"""

from typing import Sequence

import numpy as np

Offsets = Sequence[tuple[int, int]]


def boundaries(offsets: Offsets) -> np.ndarray:
  """The character positions at which a token of ``offsets`` ends cleanly.

  A token's end counts unless the next token starts before it (the two share
  a character). Zero-width tokens (special tokens) are ignored.

  Returns:
    Sorted ``[n]`` int64 array of distinct positions.
  """
  real = [(s, e) for s, e in offsets if e > s]
  ends = [e for (_, e), nxt in zip(real, real[1:] + [(None, None)])
          if nxt[0] is None or nxt[0] >= e]
  return np.unique(np.asarray(ends, np.int64))


def token_spans(student_offsets: Offsets, teacher_offsets: Offsets, *,
                start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The aligned spans of two tokenizations of one text.

  Args:
    student_offsets, teacher_offsets: ``[(start, end)]`` character offsets of
      each side's tokens, in order.
    start: text position the spans start from; tokens ending at or before it
      are left out (a span starts at the first common boundary after
      ``start`` -- pass a common boundary to have the first span start exactly
      there).

  Returns:
    ``(student_span [n_s], teacher_span [n_t], span_ends [n_spans])``: int32
    span index of each token (``-1`` outside every span; zero-width tokens are
    outside too) and the end position of each span.
  """
  common = np.intersect1d(boundaries(student_offsets), boundaries(teacher_offsets))
  common = common[common > start]

  def spans(offsets):
    if not len(offsets):
      return np.zeros((0,), np.int32)
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    ends = offsets[:, 1]
    index = np.searchsorted(common, ends, side='left')  # The span each token closes into.
    outside = (ends <= start) | (index >= len(common)) | (offsets[:, 1] <= offsets[:, 0])
    return np.where(outside, -1, index).astype(np.int32)

  return spans(student_offsets), spans(teacher_offsets), common.astype(np.int32)


def aligned_windows(student: tuple[Sequence[int], Offsets], teacher: tuple[Sequence[int], Offsets],
                    *, prompt_len: int, response_len: int, student_prompt_len: int,
                    student_response_len: int) -> dict[str, np.ndarray]:
  """One text, tokenized twice, cut into aligned (prompt, response) windows.

  Consecutive windows of the text, each cut at common boundaries (so both
  sides hold exactly the same characters): a prompt of at most
  ``prompt_len`` teacher and ``student_prompt_len`` student tokens, then a
  response of at most ``response_len`` / ``student_response_len``, each as
  long as both limits allow. Windows without a response token are dropped.

  Args:
    student, teacher: ``(ids, offsets)`` of the whole text on each side
      (``Tokenizer.encode_with_offsets``).
    prompt_len, response_len, student_prompt_len, student_response_len: the
      padded lengths.

  Returns:
    Examples (``data.text`` layout, ``N`` windows): the student's ``prompt`` /
    ``prompt_mask`` ``[N, student_prompt_len]`` (left-padded) and ``response``
    / ``response_mask`` ``[N, student_response_len]`` (right-padded); the
    teacher's ``teacher_prompt`` ... ``teacher_response_mask`` the same with
    its lengths; ``response_span`` / ``teacher_response_span`` int32: each
    response token's span (``-1`` at padding), and ``response_chars`` int32
    ``[N]``, the characters the response covers.
  """
  sides = {'': (student, student_prompt_len, student_response_len),
           'teacher_': (teacher, prompt_len, response_len)}
  common = np.concatenate([[0], np.intersect1d(boundaries(student[1]), boundaries(teacher[1]))])
  ends = {name: np.asarray(offsets, np.int64).reshape(-1, 2)[:, 1]
          for name, ((_, offsets), _, _) in sides.items()}
  # Tokens of each side that end at or before each common boundary.
  counts = {name: np.searchsorted(e, common, side='right') for name, e in ends.items()}

  def furthest(i: int, limit_of) -> int:
    """The last boundary index whose tokens since boundary ``i`` fit both sides' limits."""
    return min(int(np.searchsorted(c, c[i] + limit_of(p, r), side='right')) - 1
               for c, (_, p, r) in zip(counts.values(), sides.values()))

  windows, i = [], 0
  while i < len(common) - 1:
    j = furthest(i, lambda p, r: p)
    k = furthest(j, lambda p, r: r)
    if j == i or k == j:  # A run of tokens longer than a limit: skip it.
      i = max(i + 1, k)
      continue
    windows.append((i, j, k))
    i = k
  out = {}
  for name, ((ids, _), p_len, r_len) in sides.items():
    ids = np.asarray(ids, np.int32)
    n = len(windows)
    prompt, prompt_mask = np.zeros((n, p_len), np.int32), np.zeros((n, p_len), bool)
    response, response_mask = np.zeros((n, r_len), np.int32), np.zeros((n, r_len), bool)
    span = np.full((n, r_len), -1, np.int32)
    c = counts[name]
    for row, (i, j, k) in enumerate(windows):
      p_ids, r_ids = ids[c[i]:c[j]], ids[c[j]:c[k]]
      prompt[row, p_len - len(p_ids):], prompt_mask[row, p_len - len(p_ids):] = p_ids, True
      response[row, :len(r_ids)], response_mask[row, :len(r_ids)] = r_ids, True
      # A token ending in (common[m - 1], common[m]] is in span m - j - 1.
      span[row, :len(r_ids)] = np.searchsorted(
          common, ends[name][c[j]:c[k]], side='left') - j - 1
    out.update({f'{name}prompt': prompt, f'{name}prompt_mask': prompt_mask,
                f'{name}response': response, f'{name}response_mask': response_mask,
                f'{name}response_span': span})
  out['response_chars'] = np.asarray([common[k] - common[j] for _, j, k in windows], np.int32)
  return out
