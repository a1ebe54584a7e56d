"""The distillation report of an LM run: size, speed and quality, teacher beside student.

``distillation_report`` gathers, for the teacher and the distilled student:
parameters; tensor bytes as GGUF f32 / f16 / q8_0 (``export.gguf_tensor_bytes``,
what ``tools.export`` writes, metadata aside); greedy decoding tokens/s on this
machine at batch 1 and 16 (the same prompts, a fixed number of new tokens, the
compiled second call timed); the held-out figures of the run's last evaluation
(perplexity, top-1 agreement with the teacher, KL(teacher || student)); and
``PROMPTS`` answered greedily by both. ``markdown`` renders it as the run's
``report.md``.
"""

import time
from typing import Any

import jax

from distill_jax.llm import export
from distill_jax.llm.model import Llama
from distill_jax.llm.sampling import SamplingParams, generate, generate_text, left_pad
from distill_jax.llm.tokenizer import Tokenizer

PROMPTS = ('What is the capital of France?',
           'Write one line of verse about the sea.',
           'Give me a word that rhymes with night.')
SPEED_BATCHES = (1, 16)


def _messages(prompt: str, tokenizer: Tokenizer) -> str | list[dict[str, str]]:
  return [{'role': 'user', 'content': prompt}] if tokenizer.chat_template else prompt


def _prompt_batch(tokenizer: Tokenizer, batch_size: int) -> tuple[Any, Any]:
  """``PROMPTS`` cycled to ``batch_size`` rows, left-padded as ``generate_text`` pads."""
  ids = [tokenizer.encode_chat(m) if isinstance(m, list) else tokenizer.encode(m)
         for m in (_messages(PROMPTS[i % len(PROMPTS)], tokenizer) for i in range(batch_size))]
  return left_pad(ids, tokenizer.pad_id, multiple=16)


def _room(model: Llama, prompt_len: int, new_tokens: int) -> int:
  """``new_tokens``, fewer if the context leaves less room after the prompt (0: none)."""
  return max(0, min(new_tokens, model.config.max_seq_len - prompt_len))


def decoding_tokens_per_s(model: Llama, variables: Any, tokenizer: Tokenizer,
                          batch_size: int, new_tokens: int) -> float | None:
  """Greedy tokens/s of ``model`` on ``PROMPTS`` (cycled to ``batch_size`` rows),
  exactly ``new_tokens`` each (no EOS stop; fewer if the context is shorter,
  None if the prompts fill it); the second, compiled call is timed."""
  tokens, mask = _prompt_batch(tokenizer, batch_size)
  new_tokens = _room(model, tokens.shape[1], new_tokens)
  if not new_tokens:
    return None
  sampling = SamplingParams(max_new_tokens=new_tokens)

  def run():
    out = generate(model, variables, tokens, mask, jax.random.PRNGKey(0), sampling,
                   eos_id=None, pad_id=tokenizer.pad_id)
    jax.block_until_ready(out.tokens)

  run()
  start = time.perf_counter()
  run()
  return batch_size * new_tokens / (time.perf_counter() - start)


def distillation_report(models: dict[str, tuple[Llama, Any, Tokenizer]],
                        evaluation: dict[str, float], *, new_tokens: int = 32,
                        answer_tokens: int = 48) -> dict[str, Any]:
  """The report of ``models`` (``{'teacher': (model, variables, tokenizer),
  'student': ...}``; the tokenizers differ in cross-tokenizer runs) and the
  run's last ``evaluation`` (``metrics.eval_summary`` of the LM task)."""
  rows: dict[str, dict[str, Any]] = {}
  answers: dict[str, list[str]] = {}
  for role, (model, variables, tokenizer) in models.items():
    messages = [_messages(p, tokenizer) for p in PROMPTS]
    prompt_len = _prompt_batch(tokenizer, len(PROMPTS))[0].shape[1]
    config = model.config
    rows[role] = {
        'parameters': config.num_params(),
        'gguf_bytes': {t: export.gguf_tensor_bytes(config, t) for t in export.GGUF_TYPES},
        'greedy_tokens_per_s': {
            f'batch_{b}': decoding_tokens_per_s(model, variables, tokenizer, b, new_tokens)
            for b in SPEED_BATCHES}}
    room = _room(model, prompt_len, answer_tokens)
    answers[role] = (generate_text(model, variables, tokenizer, messages,
                                   SamplingParams(max_new_tokens=room))[0] if room
                     else ['(the prompt fills the context)'] * len(PROMPTS))
  rows['teacher'].update(perplexity=evaluation.get('teacher_perplexity'), agreement=1.0, kl=0.0,
                         bits_per_char=evaluation.get('teacher_bits_per_char'))
  rows['student'].update(perplexity=evaluation.get('perplexity'),
                         agreement=evaluation.get('agreement'),
                         kl=evaluation.get('kl_teacher_student'),
                         bits_per_char=evaluation.get('bits_per_char'))
  return {'models': rows, 'prompts': list(PROMPTS), 'answers': answers,
          'new_tokens': new_tokens}


def _ratio(student: float | None, teacher: float | None) -> str:
  return f' ({student / teacher:.2f}x)' if student and teacher else ''


def markdown(report: dict[str, Any]) -> str:
  """``report.md``: the table, then each prompt with both answers."""
  t, s = report['models']['teacher'], report['models']['student']
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  lines = ['| | teacher | student |', '|---|---|---|',
           f'| parameters | {t["parameters"]:,} | {s["parameters"]:,}'
           f'{_ratio(s["parameters"], t["parameters"])} |']
  for kind in export.GGUF_TYPES:
    tb, sb = t['gguf_bytes'][kind], s['gguf_bytes'][kind]
    lines.append(f'| GGUF {kind} MiB | {tb / 2**20:.1f} | {sb / 2**20:.1f}{_ratio(sb, tb)} |')
  for key in t['greedy_tokens_per_s']:
    tv, sv = t['greedy_tokens_per_s'][key], s['greedy_tokens_per_s'][key]
    lines.append(f'| greedy tokens/s, {key.replace("_", " ")} (up to {report["new_tokens"]} '
                 f'new) | {fmt(tv, ".1f")} | {fmt(sv, ".1f")}{_ratio(sv, tv)} |')
  per_token = ''
  if s.get('bits_per_char') is not None:  # Two tokenizers: per-token figures do not compare.
    per_token = ' (per own token)'
    lines.append(f'| held-out bits per character | {fmt(t["bits_per_char"], ".3f")} | '
                 f'{fmt(s["bits_per_char"], ".3f")}'
                 f'{_ratio(s["bits_per_char"], t["bits_per_char"])} |')
  lines += [f'| held-out perplexity{per_token} | {fmt(t["perplexity"], ".1f")} | '
            f'{fmt(s["perplexity"], ".1f")}{_ratio(s["perplexity"], t["perplexity"])} |',
            f'| top-1 agreement with the teacher | 1 | {fmt(s["agreement"], ".3f")} |',
            f'| KL(teacher ‖ student) per token | 0 | {fmt(s["kl"], ".3f")} |', '']
  for i, prompt in enumerate(report['prompts']):
    lines += [f'**{prompt}**', '',
              f'- teacher: {report["answers"]["teacher"][i].strip()!r}',
              f'- student: {report["answers"]["student"][i].strip()!r}', '']
  return '\n'.join(lines)

