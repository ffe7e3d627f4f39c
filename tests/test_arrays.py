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


def test_splitmix64_matches_the_reference_generator():
    """SplitMix64 (Steele, Lea, Flood 2014): from state 0 the generator's outputs are the hashes of
    k * gamma for k = 0, 1, 2 (published first outputs)."""
    from etr_sim.arrays import splitmix64

    gamma = 0x9E3779B97F4A7C15
    states = np.array([0, gamma, (2 * gamma) % 2**64], dtype=np.uint64)
    assert splitmix64(states).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    x = np.arange(10, dtype=np.uint64)
    before = x.copy()
    splitmix64(x)
    np.testing.assert_array_equal(x, before)  # a new array: the input is left alone
