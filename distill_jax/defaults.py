"""The full default config: every key an experiment config may set.

Config files in ``configs/`` start from ``default_config()`` and override what
they need. ``validate(config)`` refuses keys that are not here (a typo such as
``optim.lerning_rate`` is an error naming the closest key), so a run never
silently ignores a setting. Three sub-trees are free-form and are checked by
the object they configure instead: ``student.kwargs`` / ``teacher.kwargs``
(model constructor arguments) and ``method`` (the method's hyper-parameters).
"""

import difflib

import ml_collections

FREE_FORM = ('student.kwargs', 'teacher.kwargs', 'method')


def default_config() -> ml_collections.ConfigDict:
  """The default config (a CE-trained MLP on MNIST), documented key by key."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'            # registered data set (registry.names('datasets'))
  c.data.data_dir = ''             # '' = tfds default (TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.crop_padding = 0  # random translation by up to this many pixels (zero fill)
  c.data.augment.flip = False      # random horizontal flip
  c.data.mixing = ml_collections.ConfigDict()  # in-step mixing (distill_jax/data/mixing.py)
  c.data.mixing.mixup_alpha = 0.0  # Beta(a, a) mixup weight; 0 = off
  c.data.mixing.cutmix_alpha = 0.0  # Beta(a, a) CutMix box; 0 = off (both on: one per batch)

  c.student = ml_collections.ConfigDict()
  c.student.model = 'mlp'          # registry.names('models')
  c.student.kwargs = ml_collections.ConfigDict()
  c.student.dtype = 'float32'      # compute dtype (bfloat16 = mixed precision); params and
                                   # optimizer state stay float32, losses are float32

  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ''           # the teacher run's workdir ('' = no teacher)
  c.teacher.model = ''             # '' = the model named in the teacher workdir's config.json
  c.teacher.kwargs = ml_collections.ConfigDict()
  c.teacher.dtype = 'bfloat16'     # the teacher's compute dtype for inference (params are
                                   # restored in float32; losses are computed in float32)
  c.teacher.view = 'consistent'    # what the teacher sees: consistent | independent | clean
                                   # (distill_jax/data/views.py)

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

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'             # sgd | adam | adamw
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9           # sgd only
  c.optim.nesterov = False         # sgd only
  c.optim.weight_decay = 0.0       # coupled (PyTorch SGD style) for sgd/adam, decoupled for adamw
  c.optim.schedule = 'cosine'      # constant | cosine | step
  c.optim.warmup_epochs = 0.0
  c.optim.decay_epochs = ()        # step schedule: epochs at which lr *= decay_factor
  c.optim.decay_factor = 0.1
  c.optim.grad_clip_norm = 0.0     # 0 = no clipping

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128         # global batch, over all devices and hosts
  c.train.num_epochs = 10.0
  c.train.num_steps = 0            # > 0 overrides num_epochs
  c.train.eval_batch_size = 1000
  c.train.log_every_steps = 100
  c.train.eval_every_epochs = 1.0  # 0 = only at the end
  c.train.checkpoint_every_epochs = 1.0
  c.train.keep_checkpoints = 2
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
  c.sharding.large_model_bytes = 2**30  # models (or teacher sets) above this size must be sharded:
  c.sharding.max_replicated_fraction = 0.5  # at most this share of their bytes fully replicated
  c.sharding.teacher_rules = ()    # logical -> mesh rules of the teachers; () = the rules below
  c.sharding.rules = (
      ('batch', ('data', 'fsdp')),
      ('embed', None), ('mlp', None), ('classes', None),
      ('conv_in', None), ('conv_out', None),
  )
  return c


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
      lines.append(f'  {path}{hint}')
    raise ValueError(
        'Unknown config keys:\n' + '\n'.join(lines) +
        f'\nThe valid keys are listed, with their meaning, in {where}.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every key of ``config`` that the defaults lack."""
  check_keys(config, default_config(), FREE_FORM, 'distill_jax/defaults.py')
