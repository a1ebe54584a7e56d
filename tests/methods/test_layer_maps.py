"""Student -> teacher layer maps: every form, and the out-of-range error naming both depths."""

import pytest

from distill_jax.methods import layer_maps


@pytest.mark.parametrize('layer_map, want', [
    ('last', ((3, 11),)),
    ('last:2', ((2, 10), (3, 11))),
    ('uniform', ((0, 2), (1, 5), (2, 8), (3, 11))),
    ('0:0, -1:7', ((0, 0), (3, 7))),
    ('1:4 2:-2', ((1, 4), (2, 10))),
    (((1, 4), (2, -2)), ((1, 4), (2, 10))),
    (lambda s, t: [(i, 2 * i) for i in range(s)], ((0, 0), (1, 2), (2, 4), (3, 6))),
])
def test_layer_map_forms(layer_map, want):
  assert layer_maps.layer_pairs(layer_map, 4, 12) == want


def test_uniform_with_a_deeper_student_repeats_teacher_blocks():
  assert layer_maps.layer_pairs('uniform', 4, 2) == ((0, 0), (1, 0), (2, 0), (3, 1))


@pytest.mark.parametrize('layer_map', ['4:0', '0:12', 'last:5', ((0, -13),),
                                       lambda s, t: [(0, t)]])
def test_out_of_range_names_both_depths(layer_map):
  with pytest.raises(ValueError, match=r'token_hidden: .* out of range: the student has 4 '
                                       r'blocks \(0..3\) and the teacher 12 \(0..11\)'):
    layer_maps.layer_pairs(layer_map, 4, 12, 'token_hidden')


@pytest.mark.parametrize('layer_map', ['first', '1-2', 'last:x', ''])
def test_unreadable_maps_say_which_forms_exist(layer_map):
  with pytest.raises(ValueError, match="use 'last', 'last:<k>', 'uniform'"):
    layer_maps.layer_pairs(layer_map, 4, 12)


def test_depth_counts_block_features():
  assert layer_maps.depth({'embed': 0, 'hidden_0': 0, 'hidden_1': 0, 'pre_logits': 0}) == 2
