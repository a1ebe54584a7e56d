"""Language-model distillation: a Llama-family decoder and everything around it.

* ``model``: ``Llama``, ``LlamaConfig``, ``init_cache`` (Flax Linen, logical axes).
* ``weights``: ``load_gguf``, ``load_safetensors``, ``load_pretrained``,
  ``resolve_pretrained`` ('smollm2' / a .gguf / a HF folder).
* ``tokenizer``: ``load_tokenizer`` (GGUF metadata or tokenizer.json), chat templates.
* ``sampling``: ``generate`` (jitted, KV cache, greedy/temperature/top-k/top-p),
  ``generate_text``.
* ``seqkd``: sequence-level distillation data (teacher responses as a tfds data set).

Training a student LM is the ``language_model`` task of the one trainer
(``distill_jax.tasks.language_model``, ``python -m distill_jax.main``).
Submodules are imported on use, so importing the package stays cheap.
"""
