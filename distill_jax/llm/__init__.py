"""Language-model distillation: a Llama-family decoder and everything around it.

* ``model``: ``Llama``, ``LlamaConfig``, ``init_cache`` (Flax Linen, logical axes).
* ``weights``: ``load_gguf``, ``load_safetensors``, ``load_pretrained``.
* ``tokenizer``: ``load_tokenizer`` (GGUF metadata or tokenizer.json), chat templates.
* ``sampling``: ``generate`` (jitted, KV cache, greedy/temperature/top-k/top-p),
  ``generate_text``.
* ``objectives``: the shared part of the token-level methods (``methods/token_*.py``).
* ``train``: LM batches, the pure LM train/eval steps, the loop, on-policy GKD.
* ``seqkd``: sequence-level distillation data (teacher responses as a tfds data set).

Submodules are imported on use, so importing the package stays cheap.
"""
