"""Students that start from the teacher's blocks (DistilBERT-style layer selection).

A ``teacher_layers`` student has the teacher's widths, vocabulary and
embeddings, and a chosen subset of its decoder blocks, in the chosen order
(DistilBERT took every other layer of BERT; here any list). Its params are the
teacher's embedding, final norm, output head (untied) and those blocks, laid
out for the student (unrolled ``layers_<i>`` or scanned ``layers`` ``[L, ...]``,
whatever either model uses).
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.llm.model import LlamaConfig


def evenly_spaced_layers(teacher_layers: int, count: int) -> tuple[int, ...]:
  """``count`` block indices spread over ``0 .. teacher_layers - 1``, first and
  last included (``count = 1``: the last block)."""
  if not 1 <= count <= teacher_layers:
    raise ValueError(f'{count} student blocks from a teacher of {teacher_layers}: choose '
                     f'1 to {teacher_layers}.')
  if count == 1:
    return (teacher_layers - 1,)
  return tuple(int(i) for i in np.round(np.linspace(0, teacher_layers - 1, count)))


def check_layers(layers: Sequence[int], teacher_layers: int) -> tuple[int, ...]:
  """``layers`` as a tuple of distinct teacher block indices, or one clear error."""
  layers = tuple(int(i) for i in layers)
  bad = [i for i in layers if not 0 <= i < teacher_layers]
  if not layers or bad or len(set(layers)) != len(layers):
    raise ValueError(f'student.init_layers={list(layers)}: give distinct teacher block '
                     f'indices in 0..{teacher_layers - 1} (the teacher has {teacher_layers}'
                     f' blocks){"; out of range: " + str(bad) if bad else ""}.')
  return layers


def _blocks(params: dict[str, Any], config: LlamaConfig) -> list[Any]:
  """The per-block param trees of ``params`` (scanned: rows of the stacked ``layers``)."""
  if config.scan_layers:
    return [jax.tree.map(lambda x, i=i: x[i], params['layers'])
            for i in range(config.num_layers)]
  return [params[f'layers_{i}'] for i in range(config.num_layers)]


def teacher_layer_params(teacher_params: dict[str, Any], teacher_config: LlamaConfig,
                         layers: Sequence[int], student_config: LlamaConfig) -> dict[str, Any]:
  """The student's ``params``: the teacher's non-block params and its blocks
  ``layers`` (as block 0, 1, ... of the student), in the student's layout and
  float32. Trace it under ``jax.jit`` with the student's shardings as
  ``out_shardings`` (the teacher's arrays may span several hosts)."""
  blocks = _blocks(teacher_params, teacher_config)
  chosen = [blocks[i] for i in layers]
  out = {k: v for k, v in teacher_params.items()
         if k != 'layers' and not k.startswith('layers_')}
  if student_config.scan_layers:
    out['layers'] = jax.tree.map(lambda *rows: jnp.stack(rows), *chosen)
  else:
    out.update({f'layers_{i}': block for i, block in enumerate(chosen)})
  return jax.tree.map(lambda x: x.astype(jnp.float32), out)
