"""``python -m distill_jax.llm.main`` is ``python -m distill_jax.main`` (one CLI for every task).

Kept so that older LM commands still run; the flags are the same.
"""

from absl import app

from distill_jax.main import main

if __name__ == '__main__':
  app.run(main)
