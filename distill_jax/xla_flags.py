"""XLA flags distill_jax adds by default, before JAX starts its backends.

``import distill_jax`` calls :func:`apply_defaults`, which appends each flag
of :data:`CPU_DEFAULTS` to ``XLA_FLAGS`` unless the user already set that
flag (any value), ``DISTILL_JAX_XLA_DEFAULTS=0`` is set, or the installed
jaxlib is not one the flag was measured on (:data:`TESTED_JAXLIB`; XLA
aborts on flags it does not know). XLA reads ``XLA_FLAGS`` once, when the
first backend starts, so the defaults apply when ``distill_jax`` is imported
before the first JAX computation (``python -m distill_jax.main`` does); later
they are a no-op.

The flags and why (numbers in ``benchmarks/README.md``):

* ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: XLA:CPU
  (jaxlib 0.10) runs every convolution through YNNPACK by default. On the
  2-core AMD EPYC (Zen 4) dev machine, on one core, YNNPACK reaches on average
  87% / 79% / 49% of oneDNN's (PyTorch's) GFLOP/s on the CIFAR ResNet
  convolutions (forward / input gradient / weight gradient), XLA's Eigen
  convolutions 95% / 80% / 68%; on two cores YNNPACK also leaves the second
  core idle about a quarter of the step. Removing ``individual_convolution`` from the YNN fusion types
  (dots stay on YNNPACK) made the resnet32x4 -> resnet8x4 KD step 26% faster
  on 2 cores (2.12 s -> 1.58 s per step, batch 64) and left the LM KD step
  unchanged (it has no convolutions). CPU only; accelerators ignore it.
"""

import importlib.metadata
import os
from typing import MutableMapping

CPU_DEFAULTS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)
# jaxlib versions (prefixes) whose XLA knows, and was measured with, CPU_DEFAULTS.
TESTED_JAXLIB = ('0.10.',)
OPT_OUT = 'DISTILL_JAX_XLA_DEFAULTS'


def _flag_name(flag: str) -> str:
  return flag.split('=', 1)[0].lstrip('-')


def apply_defaults(environ: MutableMapping[str, str] | None = None,
                   jaxlib_version: str | None = None) -> list[str]:
  """Appends the default flags the user has not set to ``XLA_FLAGS``.

  Args:
    environ: the environment to edit (default ``os.environ``).
    jaxlib_version: the installed jaxlib's version (default: read it).

  Returns:
    The flags added (empty when opted out, untested jaxlib, or all set).
  """
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return []
  if jaxlib_version is None:
    try:
      jaxlib_version = importlib.metadata.version('jaxlib')
    except importlib.metadata.PackageNotFoundError:
      return []
  if not jaxlib_version.startswith(TESTED_JAXLIB):
    return []
  current = environ.get('XLA_FLAGS', '')
  present = {_flag_name(f) for f in current.split()}
  added = [f for f in CPU_DEFAULTS if _flag_name(f) not in present]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip(), *added]).strip()
  return added
