"""A Reshape that only moves size-1 axes is emitted as a Transpose (so a stream can follow the
time axis through it); anything else stays a Reshape."""
import numpy as np
import pytest

from edgeseq.converters.unit_axes import unit_move_perm


@pytest.mark.parametrize("src,dst", [((1, 6, 5), (6, 1, 5)), ((6, 1, 6), (1, 6, 6)),
                                     ((1, 6, 1, 5), (6, 5, 1, 1)), ((3, 1), (1, 3))])
def test_perm_equals_the_reshape(src, dst):
    x = np.arange(int(np.prod(src))).reshape(src)
    perm = unit_move_perm(src, dst)
    assert perm is not None
    assert np.array_equal(x.transpose(perm), x.reshape(dst))


@pytest.mark.parametrize("src,dst", [((1, 6, 5), (1, 6, 5)), ((2, 3), (3, 2)), ((1, 6, 5), (6, 5)),
                                     ((1, 6, 5), (1, 30, 1)), ((1, "T", 5), ("T", 1, 5))])
def test_other_reshapes_are_not_transposes(src, dst):
    assert unit_move_perm(src, dst) is None
