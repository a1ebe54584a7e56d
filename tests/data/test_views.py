"""Teacher views: consistent teaching feeds the teacher the student's exact pixels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.data import augment
from distill_jax.data import views

VIEW = dict(mean=(0.5,), std=(0.25,), augment_config={'crop_padding': 2, 'flip': True},
            mixing_config={'mixup_alpha': 1.0})


def _batch():
  images = jax.random.randint(jax.random.PRNGKey(0), (8, 6, 6, 1), 0, 256).astype(jnp.uint8)
  return {'image': images, 'label': jnp.arange(8)}


def test_consistent_teacher_sees_the_student_pixels():
  student, teacher = views.make_views(jax.random.PRNGKey(1), _batch(), teacher_view='consistent',
                                      **VIEW)
  np.testing.assert_array_equal(student['image'], teacher)
  assert 'mix_label' in student


def test_clean_teacher_sees_the_unaugmented_images():
  batch = _batch()
  student, teacher = views.make_views(jax.random.PRNGKey(1), batch, teacher_view='clean', **VIEW)
  np.testing.assert_allclose(teacher, augment.normalize(batch['image'], (0.5,), (0.25,)))
  assert not np.allclose(student['image'], teacher)


def test_independent_teacher_sees_another_augmentation_of_the_same_examples():
  batch = _batch()
  student, teacher = views.make_views(jax.random.PRNGKey(1), batch, teacher_view='independent',
                                      **VIEW)
  assert teacher.shape == student['image'].shape
  assert not np.allclose(student['image'], teacher)
  no_aug = dict(VIEW, augment_config={}, mixing_config={})
  student, teacher = views.make_views(jax.random.PRNGKey(1), batch, teacher_view='independent',
                                      **no_aug)
  np.testing.assert_array_equal(student['image'], teacher)


def test_unknown_view():
  with pytest.raises(ValueError, match='consistent, independent, clean'):
    views.check_teacher_view('same')
