"""Students built from the teacher's own weights: fewer blocks, or narrower ones.

* ``teacher_layers`` (DistilBERT-style layer selection): the teacher's widths,
  vocabulary and embeddings, and a chosen subset of its decoder blocks, in the
  chosen order (DistilBERT took every other layer of BERT; here any list).
* ``pruned`` (Minitron-style width pruning, Muralidharan et al. 2024): every
  block, narrower. Each attention head, SwiGLU channel and embedding channel
  is ranked by its mean activation on calibration batches (``Llama``'s sown
  ``intermediates/importance``: the norm of a head's output, ``|silu(gate) *
  up|``, ``|RMSNorm(x)|`` summed over the norms); the top ones are kept,
  per layer for heads and channels, once for the embedding width. Heads are
  kept by whole key/value groups (a KV head with its query heads, importance
  summed), so grouped-query attention stays valid.

Params come out laid out for the student (unrolled ``layers_<i>`` or scanned
``layers`` ``[L, ...]``, whatever either model uses), float32.
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


def width_importance(intermediates: dict[str, Any], config: LlamaConfig) -> dict[str, Any]:
  """``{'embed' [D], 'heads' [L, H], 'mlp' [L, F]}`` from the sown
  ``intermediates`` of one ``apply(..., mutable=['intermediates'])``."""
  get = lambda node: node['importance'][0]
  if config.scan_layers:
    blocks = intermediates['layers']
    heads, mlp = get(blocks['attn']), get(blocks['mlp'])
    norms = get(blocks['attn_norm']).sum(0) + get(blocks['mlp_norm']).sum(0)
  else:
    blocks = [intermediates[f'layers_{i}'] for i in range(config.num_layers)]
    heads = jnp.stack([get(b['attn']) for b in blocks])
    mlp = jnp.stack([get(b['mlp']) for b in blocks])
    norms = sum(get(b['attn_norm']) + get(b['mlp_norm']) for b in blocks)
  return {'embed': norms + get(intermediates['final_norm']), 'heads': heads, 'mlp': mlp}


def kept_channels(importance: dict[str, np.ndarray], teacher_config: LlamaConfig,
                  student_config: LlamaConfig) -> dict[str, Any]:
  """The teacher indices a ``pruned`` student keeps, each sorted ascending:
  ``embed`` ``[D']``, per layer ``groups`` ``[kv']`` (KV heads), ``heads``
  ``[H']`` (their query heads) and ``mlp`` ``[F']``."""
  top = lambda scores, k: np.sort(np.argsort(-np.asarray(scores), kind='stable')[:k])
  per_group = teacher_config.num_heads // teacher_config.num_kv_heads
  layers = []
  for heads, mlp in zip(np.asarray(importance['heads']), np.asarray(importance['mlp'])):
    groups = top(heads.reshape(teacher_config.num_kv_heads, per_group).sum(1),
                 student_config.num_kv_heads)
    layers.append({'groups': groups,
                   'heads': (groups[:, None] * per_group + np.arange(per_group)).ravel(),
                   'mlp': top(mlp, student_config.intermediate_size)})
  return {'embed': top(importance['embed'], student_config.hidden_size), 'layers': layers}


def _pruned_block(block: dict[str, Any], embed: np.ndarray, kept: dict[str, np.ndarray]
                  ) -> dict[str, Any]:
  attn, mlp = block['attn'], block['mlp']
  out = {'attn_norm': {'scale': block['attn_norm']['scale'][embed]},
         'mlp_norm': {'scale': block['mlp_norm']['scale'][embed]},
         'attn': {'q': attn['q'][embed][:, kept['heads']],
                  'k': attn['k'][embed][:, kept['groups']],
                  'v': attn['v'][embed][:, kept['groups']],
                  'o': attn['o'][kept['heads']][..., embed]},
         'mlp': {'gate': mlp['gate'][embed][:, kept['mlp']],
                 'up': mlp['up'][embed][:, kept['mlp']],
                 'down': mlp['down'][kept['mlp']][:, embed]}}
  for name, index in (('q_bias', 'heads'), ('k_bias', 'groups'), ('v_bias', 'groups')):
    if name in attn:
      out['attn'][name] = attn[name][kept[index]]
  return out


def pruned_params(teacher_params: dict[str, Any], teacher_config: LlamaConfig,
                  kept: dict[str, Any], student_config: LlamaConfig) -> dict[str, Any]:
  """The student's ``params``: the teacher's, sliced to ``kept`` (``kept_channels``),
  in the student's layout and float32. Trace under ``jax.jit`` as
  ``teacher_layer_params``."""
  embed = kept['embed']
  blocks = [_pruned_block(block, embed, layer) for block, layer
            in zip(_blocks(teacher_params, teacher_config), kept['layers'])]
  out = {'embed': {'embedding': teacher_params['embed']['embedding'][:, embed]},
         'final_norm': {'scale': teacher_params['final_norm']['scale'][embed]}}
  if 'lm_head' in teacher_params:
    out['lm_head'] = teacher_params['lm_head'][embed]
  if student_config.scan_layers:
    out['layers'] = jax.tree.map(lambda *rows: jnp.stack(rows), *blocks)
  else:
    out.update({f'layers_{i}': block for i, block in enumerate(blocks)})
  return jax.tree.map(lambda x: x.astype(jnp.float32), out)
