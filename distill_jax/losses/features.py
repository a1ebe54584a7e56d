"""Feature distillation kernels: intermediate activations of student and teacher.

Conventions (as in ``logits.py``): pure functions, per-example outputs
(``[B]``; the caller takes the mean over the batch), fp32 math whatever the
input dtype, the teacher behind ``jax.lax.stop_gradient``, shape checks at
trace time. Feature maps are NHWC, ``[B, H, W, C]``. Where a kernel compares
maps of different resolutions, ``match_spatial`` average-pools the larger one
down to the smaller one first (RepDistiller's ``adaptive_avg_pool2d``),
which needs one size to be an integer multiple of the other.

With the batch mean, every kernel reproduces the value of the reference
implementation (RepDistiller, ``distiller_zoo/*.py``) named in its docstring.
"""

import jax
import jax.numpy as jnp

from distill_jax.registry import register

Array = jax.Array


def as_float32(x) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f'Features must be floating point; got dtype {x.dtype}.')
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def float32_pair(student, teacher) -> tuple[Array, Array]:
  """Both in (at least) float32, the teacher behind ``jax.lax.stop_gradient``."""
  return as_float32(student), jax.lax.stop_gradient(as_float32(teacher))


def check_same_shape(fn: str, student: Array, teacher: Array) -> None:
  """A ValueError naming ``fn`` unless ``student`` and ``teacher`` have one shape."""
  if student.shape != teacher.shape:
    raise ValueError(f'{fn}: student {student.shape} and teacher {teacher.shape} '
                     'must have the same shape.')


def _check_maps(fn: str, student: Array, teacher: Array) -> None:
  if student.ndim != 4 or teacher.ndim != 4:
    raise ValueError(f'{fn}: expects NHWC feature maps [B, H, W, C]; got student '
                     f'{student.shape} and teacher {teacher.shape}.')
  if student.shape[0] != teacher.shape[0]:
    raise ValueError(f'{fn}: student and teacher batch sizes differ: '
                     f'{student.shape} vs {teacher.shape}.')


def _pool_to(x: Array, size: tuple[int, int]) -> Array:
  """Average-pools ``[B, H, W, C]`` to ``[B, h, w, C]`` (``H % h == 0``)."""
  b, height, width, c = x.shape
  h, w = size
  return x.reshape(b, h, height // h, w, width // w, c).mean(axis=(2, 4))


def common_resolution(student_shape, teacher_shape) -> tuple[int, int] | None:
  """The smaller ``(H, W)`` of two NHWC shapes; None unless it divides both."""
  (hs, ws), (ht, wt) = student_shape[1:3], teacher_shape[1:3]
  h, w = min(hs, ht), min(ws, wt)
  return None if hs % h or ht % h or ws % w or wt % w else (h, w)


def match_spatial(student: Array, teacher: Array) -> tuple[Array, Array]:
  """Both maps at the smaller of the two resolutions.

  Args:
    student: ``[B, Hs, Ws, Cs]``.
    teacher: ``[B, Ht, Wt, Ct]``.

  Returns:
    ``(student, teacher)`` with equal ``H, W`` (the larger one average-pooled).

  Raises:
    ValueError: neither resolution divides the other.
  """
  size = common_resolution(student.shape, teacher.shape)
  if size is None:
    (hs, ws), (ht, wt) = student.shape[1:3], teacher.shape[1:3]
    raise ValueError(f'Cannot pool feature maps of sizes {hs}x{ws} (student) and {ht}x{wt} '
                     '(teacher) to a common resolution: one must be an integer multiple of '
                     'the other.')
  return _pool_to(student, size), _pool_to(teacher, size)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """``x / max(||x||, eps)`` along ``axis`` (``torch.nn.functional.normalize``)."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


@register('losses', 'hint')
def hint_mse(student: Array, teacher: Array) -> Array:
  """FitNet hint loss (Romero et al. 2015), ``mean((s - t)**2)`` per example.

  Args:
    student: the regressed student features, any shape ``[B, ...]``.
    teacher: teacher features of the same shape; never differentiated.

  Returns:
    ``[B]`` float32: mean squared difference over the non-batch axes
    (RepDistiller ``HintLoss`` = ``nn.MSELoss()`` after the batch mean).
  """
  student, teacher = float32_pair(student, teacher)
  check_same_shape('hint_mse', student, teacher)
  return jnp.mean((student - teacher)**2, axis=tuple(range(1, student.ndim)))


def attention_map(features: Array, *, p: float = 2.0) -> Array:
  """Zagoruyko & Komodakis (2017) spatial attention, ``[B, H, W, C] -> [B, H*W]``.

  ``normalize(mean_c(f**p))``: the channel mean of the ``p``-th power, flattened
  and L2-normalized per example.
  """
  features = as_float32(features)
  return l2_normalize(jnp.mean(features**p, axis=-1).reshape(features.shape[0], -1))


@register('losses', 'attention_transfer')
def attention_transfer(student: Array, teacher: Array, *, p: float = 2.0) -> Array:
  """Attention transfer: ``mean((at(s) - at(t))**2)`` over positions.

  Args:
    student: ``[B, Hs, Ws, Cs]``; channels may differ from the teacher's.
    teacher: ``[B, Ht, Wt, Ct]``; never differentiated.
    p: power of the activations in the attention map.

  Returns:
    ``[B]`` float32 in ``[0, 4 / (H*W)]`` (both maps are unit vectors); 0 iff
    the attention maps agree (RepDistiller ``Attention``, per layer).
  """
  _check_maps('attention_transfer', student, teacher)
  student, teacher = match_spatial(student, jax.lax.stop_gradient(teacher))
  return jnp.mean((attention_map(student, p=p) - attention_map(teacher, p=p))**2, -1)


def _poly_kernel_mean(a: Array, b: Array) -> Array:
  """``mean_{i,j} (a_i . b_j)**2`` for ``a`` ``[B, Ca, N]``, ``b`` ``[B, Cb, N]`` -> ``[B]``."""
  return jnp.mean(jnp.einsum('bin,bjn->bij', a, b)**2, axis=(1, 2))


@register('losses', 'nst')
def neuron_selectivity_mmd(student: Array, teacher: Array) -> Array:
  """Neuron selectivity transfer (Huang & Wang 2017): squared MMD, polynomial kernel.

  Each channel's spatial map, L2-normalized, is one sample; with the kernel
  ``k(x, y) = (x . y)**2`` the loss is
  ``mean k(t, t) + mean k(s, s) - 2 mean k(s, t)`` over channel pairs.

  Args:
    student: ``[B, Hs, Ws, Cs]``.
    teacher: ``[B, Ht, Wt, Ct]``; never differentiated.

  Returns:
    ``[B]`` float32 ``>= 0`` (an MMD), 0 when the channel sets coincide
    (RepDistiller ``NSTLoss`` with ``full_loss=True``).
  """
  _check_maps('neuron_selectivity_mmd', student, teacher)
  student, teacher = match_spatial(*float32_pair(student, teacher))
  flat = lambda f: l2_normalize(jnp.swapaxes(f.reshape(f.shape[0], -1, f.shape[-1]), 1, 2))
  s, t = flat(student), flat(teacher)
  return _poly_kernel_mean(t, t) + _poly_kernel_mean(s, s) - 2 * _poly_kernel_mean(s, t)


@register('losses', 'factor_transfer')
def factor_transfer(student_factor: Array, teacher_factor: Array, *,
                    p: int = 1) -> Array:
  """Factor transfer (Kim et al. 2018): distance of L2-normalized factors.

  Args:
    student_factor: the translator's output ``[B, ...]``.
    teacher_factor: the paraphraser's factor, same shape; never differentiated.
    p: 1 (the paper's L1) or 2.

  Returns:
    ``[B]`` float32: ``mean |f_s - f_t|**p`` of the flattened, normalized
    factors (RepDistiller ``FactorTransfer``).
  """
  if p not in (1, 2):
    raise ValueError(f'factor_transfer: p must be 1 or 2; got {p!r}.')
  check_same_shape('factor_transfer', student_factor, teacher_factor)
  s, t = (l2_normalize(f.reshape(f.shape[0], -1))
          for f in float32_pair(student_factor, teacher_factor))
  return jnp.mean(jnp.abs(s - t)**p, axis=-1)


def fsp_matrix(bottom: Array, top: Array) -> Array:
  """Yim et al. (2017) flow matrix, ``[B, H, W, C1], [B, H', W', C2] -> [B, C1, C2]``.

  ``G_ij = mean_{x} bottom_i(x) top_j(x)`` after pooling both maps to the
  smaller resolution.
  """
  bottom, top = match_spatial(as_float32(bottom), as_float32(top))
  return jnp.einsum('bhwi,bhwj->bij', bottom, top) / (bottom.shape[1] * bottom.shape[2])


@register('losses', 'fsp')
def fsp_distance(student_pair: tuple[Array, Array],
                 teacher_pair: tuple[Array, Array]) -> Array:
  """``mean((G_s - G_t)**2)`` of the FSP matrices of two layer pairs.

  Args:
    student_pair: ``(bottom, top)`` student maps.
    teacher_pair: ``(bottom, top)`` teacher maps with the same channel counts;
      never differentiated.

  Returns:
    ``[B]`` float32 (RepDistiller ``FSP.compute_loss`` per pair).
  """
  g_s = fsp_matrix(*student_pair)
  g_t = jax.lax.stop_gradient(fsp_matrix(*teacher_pair))
  if g_s.shape != g_t.shape:
    raise ValueError(f'fsp_distance: FSP matrices differ in shape: student '
                     f'{g_s.shape[1:]} vs teacher {g_t.shape[1:]} (channels must match).')
  return jnp.mean((g_s - g_t)**2, axis=(1, 2))


@register('losses', 'activation_boundary')
def activation_boundary(student: Array, teacher: Array, *,
                        margin: float = 1.0) -> Array:
  """Heo et al. (2019) alternative L2 loss of activation boundaries.

  Per element: ``(s + m)**2`` where the teacher neuron is off (``t <= 0``) but
  ``s > -m``; ``(s - m)**2`` where it is on (``t > 0``) but ``s <= m``; else 0.

  Args:
    student: connector output ``[B, ...]`` (pre-activation).
    teacher: teacher pre-activations, same shape; never differentiated.
    margin: ``m > 0``.

  Returns:
    ``[B]`` float32: the sum over the non-batch axes (RepDistiller
    ``ABLoss.criterion_alternative_l2`` before its ``/ batch`` scaling).
  """
  student, teacher = float32_pair(student, teacher)
  check_same_shape('activation_boundary', student, teacher)
  off = (student > -margin) & (teacher <= 0)
  on = (student <= margin) & (teacher > 0)
  loss = jnp.where(off, (student + margin)**2, 0.0) + jnp.where(on, (student - margin)**2, 0.0)
  return jnp.sum(loss, axis=tuple(range(1, student.ndim)))


@register('losses', 'vid')
def variational_information(pred_mean: Array, target: Array,
                            log_scale: Array, *, eps: float = 1e-5) -> Array:
  """Ahn et al. (2019) VID: Gaussian negative log-likelihood (without the constant).

  ``0.5 * ((mu - t)**2 / var + log var)``, ``var = softplus(log_scale) + eps``,
  one variance per channel.

  Args:
    pred_mean: the student regressor's output ``[B, H, W, C]``.
    target: teacher map, same shape; never differentiated.
    log_scale: ``[C]`` learnable pre-softplus variances.
    eps: variance floor.

  Returns:
    ``[B]`` float32 mean over ``H, W, C`` (RepDistiller ``VIDLoss``).
  """
  pred_mean, target = float32_pair(pred_mean, target)
  if pred_mean.shape != target.shape or log_scale.shape != target.shape[-1:]:
    raise ValueError(f'variational_information: prediction {pred_mean.shape}, target '
                     f'{target.shape} and log_scale {log_scale.shape} do not fit.')
  var = jax.nn.softplus(as_float32(log_scale)) + eps
  nll = 0.5 * ((pred_mean - target)**2 / var + jnp.log(var))
  return jnp.mean(nll, axis=tuple(range(1, nll.ndim)))
