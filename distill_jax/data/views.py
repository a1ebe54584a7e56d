"""What the student and the teacher see in one train step ("teacher views").

Beyer et al. (2022, "Knowledge distillation: a good teacher is patient and
consistent") compare three ways of feeding the teacher; ``config.teacher.view``
chooses one:

- ``consistent`` (default, "function matching"): the teacher sees exactly the
  student's pixels, after crop/flip and mixup/cutmix.
- ``independent``: the teacher sees its own augmentation of the same examples
  (other crop/flip and mixing draws).
- ``clean``: the teacher sees the un-augmented, un-mixed images ("fixed
  teacher").

Everything is drawn from the step's augmentation key inside the jitted step.
"""

from typing import Any, Mapping, Sequence

import jax

from distill_jax.data import augment
from distill_jax.data import mixing

TEACHER_VIEWS = ('consistent', 'independent', 'clean')


def check_teacher_view(view: str) -> None:
  if view not in TEACHER_VIEWS:
    raise ValueError(f'teacher.view={view!r}; choose one of {", ".join(TEACHER_VIEWS)}.')


def augmented_view(rng: jax.Array, batch: dict[str, jax.Array], *,
                   mean: Sequence[float], std: Sequence[float],
                   augment_config: Mapping[str, Any] | None,
                   mixing_config: Mapping[str, Any] | None) -> dict[str, jax.Array]:
  """Crop/flip (key ``rng``), then mixing (key ``fold_in(rng, 1)``), then normalisation.

  Args:
    rng: PRNG key.
    batch: ``image`` uint8 ``[B, H, W, C]``, ``label`` int32 ``[B]``, ...

  Returns:
    ``batch`` with float32 normalised ``image`` ``[B, H, W, C]`` (and
    ``mix_label``/``mix_weight`` when mixing is on).
  """
  images = augment.augment(rng, batch['image'], augment_config)
  mixed = mixing.mix(jax.random.fold_in(rng, 1), {**batch, 'image': images}, mixing_config)
  return {**mixed, 'image': augment.normalize(mixed['image'], mean, std)}


def make_views(rng: jax.Array, batch: dict[str, jax.Array], *, mean, std,
               augment_config, mixing_config, teacher_view: str = 'consistent'
               ) -> tuple[dict[str, jax.Array], jax.Array]:
  """The student's batch and the teacher's images.

  Args:
    rng: the step's augmentation key.
    batch: the raw global batch (``image`` uint8 ``[B, H, W, C]``).
    teacher_view: one of ``TEACHER_VIEWS``.

  Returns:
    ``(student_batch, teacher_images)``: the student's batch as
    ``augmented_view`` returns it, and float32 ``[B, H, W, C]`` for the teacher.
  """
  check_teacher_view(teacher_view)
  view = dict(mean=mean, std=std, augment_config=augment_config, mixing_config=mixing_config)
  student_batch = augmented_view(rng, batch, **view)
  if teacher_view == 'consistent':
    return student_batch, student_batch['image']
  if teacher_view == 'independent':
    return student_batch, augmented_view(jax.random.fold_in(rng, 2), batch, **view)['image']
  return student_batch, augment.normalize(batch['image'], mean, std)
