import numpy as np

from graphopt.validate.compare import OutputComparison, Tolerance


def compare(a, b, tolerance=None, case="c"):
    c = OutputComparison("out", tolerance if tolerance is not None else Tolerance())
    c.add(case, np.asarray(a), np.asarray(b))
    return c


def test_identical_arrays_pass_exactly():
    c = compare([[1.0, 2.0], [3.0, np.nan]], [[1.0, 2.0], [3.0, np.nan]])
    assert c.passed and c.mismatches == 0 and c.max_abs_diff == 0 and c.worst is None


def test_one_ulp_fails_exact_and_reports_worst_and_min_tolerance():
    a = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    b = a.copy()
    b[1, 0] = np.nextafter(np.float32(4.0), np.float32(5.0))
    b[0, 1] = 2.5
    c = compare(a, b, case="random-3")
    assert not c.passed and c.mismatches == 2 and c.elements == 4
    assert c.worst.case == "random-3" and c.worst.index == (0, 1)
    assert c.worst.original == 2.0 and c.worst.rewritten == 2.5
    assert c.max_abs_diff == 0.5 and c.max_rel_diff == 0.25
    assert np.isclose(c.mean_abs_diff, (0.5 + float(b[1, 0] - 4.0)) / 4)
    d = c.to_dict()
    assert d["min_atol_to_pass"] == 0.5 and d["min_rtol_to_pass"] == 0.25
    # The reported minimum tolerances really do pass.
    assert compare(a, b, Tolerance(atol=0.5)).passed
    assert compare(a, b, Tolerance(rtol=0.25)).passed
    assert not compare(a, b, Tolerance(atol=0.49)).passed


def test_nan_against_number_is_an_infinite_difference():
    c = compare([1.0, 2.0], [1.0, np.nan], Tolerance(atol=1e9))
    assert not c.passed and c.mismatches == 1 and c.to_dict()["max_abs_diff"] == "inf"


def test_shape_and_dtype_differences_are_problems():
    c = compare(np.zeros((3, 1), np.float32), np.zeros((3, 2), np.float32), case="large")
    assert not c.passed and "case large: shape differs: original [3, 1], rewritten [3, 2]" in c.problems
    c = compare(np.zeros(3, np.float32), np.zeros(3, np.float64))
    assert not c.passed and "dtype differs: original float32, rewritten float64" in c.problems[0]


def test_strings_and_empty_outputs():
    c = compare(np.array([b"a", b"b"], object), np.array([b"a", b"c"], object))
    assert c.mismatches == 1 and c.worst.index == (1,) and c.worst.rewritten == "c"
    assert compare(np.zeros((0, 4)), np.zeros((0, 4))).passed


def test_int64_ids_compare_exactly_beyond_float_precision():
    big = np.array([2**60], np.int64)
    assert not compare(big, big + 1).passed
