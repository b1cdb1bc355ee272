"""kernels/tolerance.py: the relative error ||out - ref|| / ||ref|| (||out|| for a zero
reference), one bound per dtype, and assert_close's verdicts and messages, against values
worked out by hand."""

import numpy as np
import pytest

from lenet.kernels.tolerance import RELATIVE_ERROR, assert_close, relative_error


def test_one_bound_per_dtype():
    assert RELATIVE_ERROR == {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def test_relative_error_by_hand():
    # (3, 4) has norm 5; (3, 4.5) is 0.5 away from it
    assert relative_error([3.0, 4.5], [3.0, 4.0]) == pytest.approx(0.1, rel=1e-15)
    assert relative_error(np.float32([[3, 4]]), np.float64([[3, 4]])) == 0.0
    # a zero reference: the absolute norm of the difference
    assert relative_error([3.0, -4.0], [0.0, 0.0]) == 5.0
    # in float64 whatever the inputs' dtype: 1 + 2^-30 is not rounded away
    assert relative_error(np.float64([1 + 2**-30]), np.float32([1.0])) == pytest.approx(2**-30)


def test_assert_close_passes_within_the_bound_and_returns_the_error():
    ref = np.array([1.0, 0.0, 0.0])
    assert assert_close(ref + [9e-6, 0, 0], ref) == pytest.approx(9e-6)
    assert assert_close(ref + [9e-13, 0, 0], ref, dtype=np.float64) == pytest.approx(9e-13)


def test_assert_close_fails_past_the_bound_naming_the_worst_element():
    ref = np.array([[1.0, 0.0], [0.0, 0.0]])
    out = ref + [[0, 0], [1.1e-5, 0]]
    with pytest.raises(AssertionError, match=r"^C1: relative error 1\.10e-05 > 1e-05; worst "
                       r"at \(1, 0\): 1\.1e-05 vs 0\.0$"):
        assert_close(out, ref, what="C1")
    # float32's pass is float64's failure
    out = ref + [[1e-11, 0], [0, 0]]
    assert_close(out, ref)
    with pytest.raises(AssertionError, match=r"relative error 1\.00e-11 > 1e-12"):
        assert_close(out, ref, dtype=np.float64)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_fails_whatever_the_reference(bad):
    # a NaN-poisoned element a kernel forgot to write fails, even against the same NaN
    ref = np.array([0.5, bad, 2.0])
    with pytest.raises(AssertionError, match=r"^S2: 1 non-finite elements \(unwritten\?\), "
                       r"first at \(1,\)$"):
        assert_close(ref.copy(), ref, what="S2")


def test_a_shape_mismatch_fails_before_any_arithmetic():
    with pytest.raises(AssertionError, match=r"^F6: shape \(2, 3\), expected \(3, 2\)$"):
        assert_close(np.zeros((2, 3)), np.zeros((3, 2)), what="F6")
