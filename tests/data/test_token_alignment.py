"""Span alignment of two tokenizations by character offsets."""

import numpy as np
import pytest

from distill_jax.data import token_alignment
from distill_jax.llm import tokenizer as tokenizer_lib
from tests.llm import conftest as llm_fixtures

# "To be, or": WordPiece drops the spaces, byte-level BPE attaches them to the next word.
WORDPIECE = [(0, 2), (3, 5), (5, 6), (7, 9)]
BPE = [(0, 2), (2, 5), (5, 6), (6, 9)]


def test_tokens_that_end_together_form_one_span_each():
  s, t, ends = token_alignment.token_spans(WORDPIECE, BPE)
  np.testing.assert_array_equal(s, [0, 1, 2, 3])
  np.testing.assert_array_equal(t, [0, 1, 2, 3])
  np.testing.assert_array_equal(ends, [2, 5, 6, 9])


def test_digits_and_subwords_group_into_the_shortest_common_runs():
  # "2024x": student '202' '##4' 'x'; teacher single digits '2' '0' '2' '4', then 'x'.
  student = [(0, 3), (3, 4), (4, 5)]
  teacher = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
  s, t, ends = token_alignment.token_spans(student, teacher)
  np.testing.assert_array_equal(s, [0, 1, 2])
  np.testing.assert_array_equal(t, [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(ends, [3, 4, 5])
  # "romeo": student one word, teacher 'Rome' 'o': one span of 1 and 2 tokens.
  s, t, _ = token_alignment.token_spans([(0, 5)], [(0, 4), (4, 5)])
  np.testing.assert_array_equal(s, [0])
  np.testing.assert_array_equal(t, [0, 0])


def test_a_character_split_over_byte_tokens_is_never_a_boundary():
  # "é!" as two byte-level tokens that both report the character (0, 1), then '!'.
  teacher = [(0, 1), (0, 1), (1, 2)]
  assert token_alignment.boundaries(teacher).tolist() == [1, 2]
  s, t, _ = token_alignment.token_spans([(0, 1), (1, 2)], teacher)
  np.testing.assert_array_equal(t, [0, 0, 1])
  np.testing.assert_array_equal(s, [0, 1])


def test_start_and_trailing_tokens_and_special_tokens_are_outside():
  student = [(0, 2), (3, 5), (5, 6), (7, 9), (9, 9)]  # ... and a zero-width EOS.
  teacher = [(0, 2), (2, 5), (5, 6), (6, 8)]  # The teacher stops inside "or".
  s, t, ends = token_alignment.token_spans(student, teacher, start=2)
  np.testing.assert_array_equal(s, [-1, 0, 1, -1, -1])
  np.testing.assert_array_equal(t, [-1, 0, 1, -1])
  np.testing.assert_array_equal(ends, [5, 6])


TEXTS = [
    'To be, or not to be: that is the question.',
    'Café 2024 naïve\u2014ok  x',  # Accents (BERT strips them), an em dash, two spaces.
    'O Romeo,\nRomeo! wherefore art thou Romeo?\n\n   Deny thy father',
    '3.14159 is π; 1,000,000 ≠ 10⁶ \U0001f600 done',  # Digits, symbols, an emoji.
]


@pytest.mark.parametrize('text', TEXTS)
def test_real_tokenizers_spans_cover_the_same_text(text):
  """BERT WordPiece (30,522) against a byte-level BPE: every span covers the same
  characters (whitespace aside) on both sides, and every token lies in one span."""
  wordpiece = tokenizer_lib.load_tokenizer(tokenizer_lib.resolve_tokenizer('minilm'))
  assert wordpiece.vocab_size == 30522
  bpe = llm_fixtures.tiny_tokenizer()
  s_ids, s_off = wordpiece.encode_with_offsets(text)
  t_ids, t_off = bpe.encode_with_offsets(text)
  assert len(s_ids) == len(s_off) and len(t_ids) == len(t_off)
  s_span, t_span, ends = token_alignment.token_spans(s_off, t_off)
  assert len(ends) and ends[-1] == len(text.rstrip())
  for span in range(len(ends)):
    covered = []
    for offsets, spans in ((s_off, s_span), (t_off, t_span)):
      members = np.flatnonzero(spans == span)
      assert len(members) and np.all(np.diff(members) == 1)  # A contiguous run.
      # The characters the run covers (byte tokens of one character share its offsets).
      covered.append(text[offsets[members[0]][0]:offsets[members[-1]][1]])
    start = 0 if span == 0 else ends[span - 1]
    # WordPiece skips the spaces and BPE keeps them: compare without whitespace.
    assert ''.join(covered[0].split()) == ''.join(covered[1].split()) == ''.join(
        text[start:ends[span]].split()), (span, covered)
  # Only trailing whitespace may be left out.
  assert np.all(s_span >= 0)
  assert all(text[a:b].isspace() for (a, b), sp in zip(t_off, t_span) if sp < 0)


def test_aligned_windows_cut_both_sides_at_common_boundaries():
  # "2024x ab": student '202' '##4' 'x' 'ab'; teacher '2' '0' '2' '4' 'x' ' ab'.
  student = ([1, 2, 3, 4], [(0, 3), (3, 4), (4, 5), (6, 8)])
  teacher = ([10, 11, 12, 13, 14, 15], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 8)])
  w = token_alignment.aligned_windows(student, teacher, prompt_len=4, response_len=3,
                                      student_prompt_len=2, student_response_len=3)
  # Prompt "2024" (the student's limit of 2 ends it there), response "x ab".
  np.testing.assert_array_equal(w['prompt'], [[1, 2]])
  np.testing.assert_array_equal(w['teacher_prompt'], [[10, 11, 12, 13]])
  np.testing.assert_array_equal(w['response'], [[3, 4, 0]])
  np.testing.assert_array_equal(w['response_mask'], [[True, True, False]])
  np.testing.assert_array_equal(w['teacher_response'], [[14, 15, 0]])
  np.testing.assert_array_equal(w['response_span'], [[0, 1, -1]])
  np.testing.assert_array_equal(w['teacher_response_span'], [[0, 1, -1]])
  np.testing.assert_array_equal(w['response_chars'], [4])
  # Two teacher tokens at most: no prompt fits before "202" ends (3 teacher tokens),
  # so the window starts after it: prompt "4x", response " ab".
  w = token_alignment.aligned_windows(student, teacher, prompt_len=2, response_len=2,
                                      student_prompt_len=2, student_response_len=2)
  np.testing.assert_array_equal(w['teacher_prompt'], [[13, 14]])
  np.testing.assert_array_equal(w['prompt'], [[2, 3]])
  np.testing.assert_array_equal(w['teacher_response'], [[15, 0]])
  np.testing.assert_array_equal(w['response'], [[4, 0]])
  np.testing.assert_array_equal(w['response_chars'], [3])


@pytest.mark.parametrize('limits', [(8, 12, 8, 12), (4, 6, 6, 9)])
def test_aligned_windows_of_real_tokenizers_hold_the_same_text(limits):
  text = ' '.join(TEXTS) * 3
  wordpiece = tokenizer_lib.load_tokenizer(tokenizer_lib.resolve_tokenizer('minilm'))
  bpe = llm_fixtures.tiny_tokenizer()
  student, teacher = wordpiece.encode_with_offsets(text), bpe.encode_with_offsets(text)
  p, r, sp, sr = limits
  w = token_alignment.aligned_windows(student, teacher, prompt_len=p, response_len=r,
                                      student_prompt_len=sp, student_response_len=sr)
  assert len(w['prompt']) > 3
  cursor = {'': 0, 'teacher_': 0}
  full = {'': student, 'teacher_': teacher}

  def locate(side, ids):
    """Where ``ids`` start in the side's whole tokenization, at or after its cursor."""
    whole = full[side][0]
    for start in range(cursor[side], len(whole) - len(ids) + 1):
      if whole[start:start + len(ids)] == list(ids):
        return start
    raise AssertionError(f'{side or "student"} window tokens {ids} are not a run of the text')

  for row in range(len(w['prompt'])):
    ends = {}
    for side in cursor:
      prompt = w[f'{side}prompt'][row][w[f'{side}prompt_mask'][row]]
      response = w[f'{side}response'][row][w[f'{side}response_mask'][row]]
      start = locate(side, np.concatenate([prompt, response]).tolist())
      offsets = full[side][1]
      ends[side] = (offsets[start + len(prompt) - 1][1],
                    offsets[start + len(prompt) + len(response) - 1][1])
      cursor[side] = start + len(prompt) + len(response)
      span, mask = w[f'{side}response_span'][row], w[f'{side}response_mask'][row]
      assert np.all((span >= 0) == mask) and np.all(np.diff(span[mask]) >= 0)
    # Prompt and response end at the same character on both sides.
    assert ends[''] == ends['teacher_'], (row, ends)
    assert w['response_chars'][row] == ends[''][1] - ends[''][0]
    assert w['response_span'][row].max() == w['teacher_response_span'][row].max()
