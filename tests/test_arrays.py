import numpy as np
import pytest

from etr_sim.arrays import distinct, distinct_inverse


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_distinct_matches_np_unique(n):
    keys = np.random.default_rng(n).integers(-20, 300, n)
    values, inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(distinct(keys), values)
    got_values, got_inverse = distinct_inverse(keys)
    np.testing.assert_array_equal(got_values, values)
    np.testing.assert_array_equal(got_inverse, inverse)
    np.testing.assert_array_equal(got_values[got_inverse], keys)
