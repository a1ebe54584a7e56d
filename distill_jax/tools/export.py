r"""Exports a language-model run's student: a Hugging Face folder or a GGUF file.

  python -m distill_jax.tools.export --workdir=DIR --format=hf --out=student_hf
  python -m distill_jax.tools.export --workdir=DIR --format=gguf --out=student.gguf \
      [--gguf_type=f32|f16|q8_0]

Reads the run's ``config.json`` and latest checkpoint (the student's params
only), rebuilds the student's architecture from the config and the teacher's
metadata (``tasks.language_model.student_architecture``: no teacher tensor is
read), and writes it with its tokenizer (the teacher's, or the run's
``student.tokenizer``; GGUF takes byte-level BPE ones only) (``llm.export``). The folder
loads in ``transformers.AutoModelForCausalLM.from_pretrained(out)``; the GGUF
file in llama.cpp, in ``transformers`` (``gguf_file=``) and back in
``distill_jax`` (``teacher.pretrained=out`` / ``student.pretrained=out``).
"""

import os

from absl import app
from absl import flags
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from distill_jax import checkpoint
from distill_jax.llm import export
from distill_jax.llm import weights
from distill_jax.llm.model import LlamaConfig
from distill_jax.llm.tokenizer import Tokenizer, load_tokenizer, resolve_tokenizer
from distill_jax.tasks import language_model

FORMATS = ('hf', 'gguf')


def load_student(workdir: str) -> tuple[LlamaConfig, dict[str, np.ndarray], Tokenizer, int]:
  """``(architecture, params on the host, tokenizer, step)`` of the student of the LM
  run in ``workdir``, from its newest verified checkpoint."""
  config = ml_collections.ConfigDict(checkpoint.read_config(workdir))
  if config.get('task') != 'language_model':
    raise ValueError(f'{workdir}: task {config.get("task")!r}; export writes language-model '
                     'students (task language_model).')
  teacher_path = weights.resolve_pretrained(config.teacher.pretrained)
  # The student's own tokenizer (student.tokenizer), else the teacher's.
  tokenizer = load_tokenizer(resolve_tokenizer(config.student.get('tokenizer') or teacher_path))
  model_config, _ = language_model.student_architecture(
      config, weights.pretrained_config(teacher_path), tokenizer.vocab_size)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          nn.unbox(weights.abstract_params(model_config)))
  loaded = checkpoint.load_teacher(workdir, abstract, f'llama {model_config}', 'student')
  params = jax.tree.map(np.asarray, jax.device_get(loaded.variables['params']))
  return model_config, params, tokenizer, loaded.checkpoint.step


def run(workdir: str, fmt: str, out: str, gguf_type: str = 'f32') -> str:
  """Writes the student of ``workdir`` to ``out``; returns a one-line summary."""
  if fmt not in FORMATS:
    raise ValueError(f'--format={fmt!r}; choose one of {", ".join(FORMATS)}.')
  if os.path.exists(out):
    raise FileExistsError(f'{out} exists; export writes a new file or folder.')
  model_config, params, tokenizer, step = load_student(workdir)
  if fmt == 'hf':
    export.write_hf_folder(out, model_config, params, tokenizer)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
  else:
    export.write_gguf(out, model_config, params, tokenizer, gguf_type)
    size = os.path.getsize(out)
  return (f'{out}: the student of {workdir} at step {step} ({model_config.num_params():,} '
          f'params, {model_config.num_layers} blocks of {model_config.hidden_size}), '
          f'{size / 2**20:.1f} MiB as {fmt}{" " + gguf_type if fmt == "gguf" else ""}.')


def main(argv):
  del argv
  print(run(flags.FLAGS.workdir, flags.FLAGS.format, flags.FLAGS.out, flags.FLAGS.gguf_type))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The language-model run directory.', required=True)
  flags.DEFINE_enum('format', 'hf', FORMATS, 'hf (a transformers folder) or gguf.')
  flags.DEFINE_string('out', None, 'The folder (hf) or .gguf file to write.', required=True)
  flags.DEFINE_enum('gguf_type', 'f32', export.GGUF_TYPES, 'GGUF tensor type of 2-D weights.')
  app.run(main)
