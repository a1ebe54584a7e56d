"""Command-line tools (``python -m distill_jax.tools.<name>``)."""
