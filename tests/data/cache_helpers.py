"""A tiny registered LM teacher ('test_tiny_lm') and the logit caches the data
tests write from it (one module, so the model is registered once)."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from distill_jax.registry import register
from distill_jax.tools import cache_teacher_logits

VOCAB, SEQ = 96, 8


@register('models', 'test_tiny_lm')
class TinyLM(nn.Module):
  """Embedding + one tanh layer + head: tokens [B, T] -> (logits [B, T, V], {})."""
  vocab_size: int = VOCAB
  width: int = 16

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab_size, self.width)(tokens)
    x = jnp.tanh(nn.Dense(self.width)(x)) * 3
    return nn.Dense(self.vocab_size)(x), {}


def random_tokens(n=10):
  return np.random.default_rng(0).integers(0, VOCAB, (n, SEQ), dtype=np.int32)


def tokenizer_file(tmp_path, text='{"vocab": "tiny"}'):
  path = tmp_path / 'tokenizer.json'
  path.write_text(text)
  return str(path)


def write(tmp_path, spec, name='cache'):
  return cache_teacher_logits.run(
      model='test_tiny_lm', model_kwargs={}, tokens=random_tokens(),
      tokenizer_files=[tokenizer_file(tmp_path)], vocab_size=VOCAB,
      out=str(tmp_path / name), spec=spec, batch_size=4, init_seed=0,
      records_per_shard=4)
