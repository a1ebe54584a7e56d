"""Which tokens of two vocabularies are the same token (cross-tokenizer distillation).

``surface_forms(tokenizer)`` spells every token id the way it appears in text,
word boundary included, so that tokens of different tokenizer models compare:

* byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2): the token's bytes decoded
  by the tokenizer's own decoder (``'Ġthe'`` -> ``' the'``); a token that is
  only part of a multi-byte character has no surface form;
* WordPiece (BERT): a continuation piece ``'##ing'`` -> ``'ing'``, a
  punctuation or symbol token as itself, any other piece starts a word
  (``'the'`` -> ``' the'``);
* special (control) tokens have none.

``matched_tokens`` pairs the ids whose surface forms are equal and unique on
both sides: the labels GOLD's hybrid loss compares directly
(``methods.token_gold``). ``one_family_map`` maps the labels of two
vocabularies of one tokenizer that differ only in size (padding rows, extra
tokens), by token string.
"""

import unicodedata

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.llm.tokenizer import Tokenizer


def _is_symbol(piece: str) -> bool:
  return bool(piece) and all(unicodedata.category(c)[0] in 'PS' for c in piece)


def surface_forms(tokenizer: Tokenizer) -> list[str | None]:
  """``[vocab_size]``: each id's text as it appears in a sentence (None: not comparable)."""
  from tokenizers import decoders, models  # pylint: disable=g-import-not-at-top
  backend = tokenizer.backend
  specials = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
  forms: list[str | None] = [None] * tokenizer.vocab_size
  model = backend.model
  for token, index in backend.get_vocab(with_added_tokens=True).items():
    if token in specials or index >= len(forms):
      continue
    if isinstance(model, models.WordPiece):
      prefix = model.continuing_subword_prefix
      if token.startswith(prefix) and len(token) > len(prefix):
        forms[index] = token[len(prefix):]
      else:
        forms[index] = token if _is_symbol(token) else ' ' + token
    elif isinstance(backend.decoder, decoders.ByteLevel):
      text = backend.decoder.decode([token])
      forms[index] = None if '\ufffd' in text else text
    else:  # SentencePiece-style BPE / Unigram: '▁' marks a word start.
      forms[index] = token.replace('\u2581', ' ')
  return forms


def matched_tokens(student: Tokenizer, teacher: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """``(student_ids [M], teacher_ids [M])`` int32: the pairs of tokens with one
  surface form (unique within each vocabulary), in student id order."""
  def unique(forms):
    seen: dict[str, int] = {}
    repeated = set()
    for index, form in enumerate(forms):
      if form is None:
        continue
      if form in seen:
        repeated.add(form)
      seen[form] = index
    return {form: index for form, index in seen.items() if form not in repeated}

  ours, theirs = unique(surface_forms(student)), unique(surface_forms(teacher))
  pairs = sorted((index, theirs[form]) for form, index in ours.items() if form in theirs)
  ids = np.asarray(pairs, np.int32).reshape(-1, 2)
  return ids[:, 0], ids[:, 1]


def one_family_map(student: Tokenizer, teacher: Tokenizer, *, student_vocab: int,
                   teacher_vocab: int) -> np.ndarray | None:
  """The teacher label of each student label, for vocabularies of one family.

  Two checkpoints of one tokenizer family can differ in size only: padded
  embedding rows without a token (Qwen2.5: 151,936 vs 152,064 rows) or a few
  extra tokens. Their labels map by token string; the map must be the identity
  wherever both have the string (else the tokenizers differ and the text would
  need aligning: ``student.tokenizer``).

  Args:
    student, teacher: the two tokenizers.
    student_vocab, teacher_vocab: the models' label counts (embedding rows).

  Returns:
    None when the vocabularies are the same; else ``[student_vocab]`` int32,
    the teacher label of each student label, ``-1`` for labels the teacher
    does not have.

  Raises:
    ValueError: a token string with different ids in the two.
  """
  def tokens(tokenizer, size):
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    strings = [None] * size
    for token, index in vocab.items():
      if index < size:
        strings[index] = token
    return strings

  ours, theirs = tokens(student, student_vocab), tokens(teacher, teacher_vocab)
  if student_vocab == teacher_vocab and ours == theirs:
    return None
  teacher_id = {token: index for index, token in enumerate(theirs) if token is not None}
  mapping = np.asarray([teacher_id.get(token, -1) if token is not None else -1
                        for token in ours], np.int32)
  moved = np.flatnonzero((mapping >= 0) & (mapping != np.arange(student_vocab)))
  if len(moved):
    examples = ', '.join(f'{ours[i]!r}: {i} vs {mapping[i]}' for i in moved[:3])
    raise ValueError(
        f'The student\'s and the teacher\'s vocabularies are not one family: {len(moved)} '
        f'tokens have other ids ({examples}); token-level distillation needs one tokenizer '
        '(across tokenizers: student.tokenizer with token_uld or token_gold).')
  return mapping


def remap_logits(teacher_logits: jax.Array, mapping: np.ndarray) -> jax.Array:
  """Teacher logits ``[..., V_t]`` on the student's labels ``[..., V_s]``
  (``one_family_map``): labels the teacher lacks get probability 0."""
  mapping = jnp.asarray(mapping)
  taken = jnp.take(teacher_logits, jnp.maximum(mapping, 0), axis=-1)
  return jnp.where(mapping >= 0, taken, jnp.asarray(-1e9, taken.dtype))
