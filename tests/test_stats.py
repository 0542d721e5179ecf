"""Math invariants of the statistics every figure is made with (evaluation/stats.py)."""

import math

import numpy as np
import pytest
import torch

from patronus_diffusion.evaluation.stats import (bootstrap_interval, count_defined, mean_std, median_of_medians,
                                                 t_interval, true_median, two_way_standard_error)


def test_true_median_averages_the_two_middle_values_where_torch_takes_the_lower():
    v = torch.tensor([1.0, 2.0, 4.0, 10.0])
    assert float(v.median()) == 2.0  # torch's lower middle value: the bias this module exists to avoid
    assert true_median(v) == 3.0
    assert true_median([3.0, None, float("nan"), 1.0, 2.0]) == 2.0
    assert true_median([None, float("nan")]) is None and true_median([]) is None
    assert true_median([1.0, float("inf"), float("inf")]) is None
    assert count_defined([1.0, None, float("nan"), 2.0]) == 2
    assert median_of_medians([[1.0, 2.0], [3.0, 5.0], [10.0, 10.0]]) == 4.0


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(5, 16)), rng.normal(size=(5, 256))
    lo_s, hi_s = bootstrap_interval(small, seed=1)
    lo_l, hi_l = bootstrap_interval(large, seed=1)
    assert lo_s <= median_of_medians(small) <= hi_s and lo_l <= median_of_medians(large) <= hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_interval(small, seed=1) == (lo_s, hi_s)  # seeded
    assert bootstrap_interval(np.ones((3, 1))) is None  # one image: no interval


def test_two_way_standard_error_counts_the_shared_columns():
    """A grid whose columns (shared noises) differ a lot: the one-way SE over all cells misses that, the
    two-way SE sees it; with no column effect the two agree closely."""
    rng = np.random.default_rng(0)
    n, k = 400, 4
    rows = rng.normal(size=(n, 1)) * 0.1
    cols = np.array([[-0.3, -0.1, 0.1, 0.3]])
    grid = rows + cols + rng.normal(size=(n, k)) * 0.1
    one_way = grid.std(ddof=1) / math.sqrt(grid.size)
    two_way = two_way_standard_error(grid)
    assert two_way > 3 * one_way
    assert two_way == pytest.approx(math.sqrt(cols.var(ddof=1) / k), rel=0.2)
    flat = rows + rng.normal(size=(n, k)) * 0.1
    row_se = flat.mean(1).std(ddof=1) / math.sqrt(n)
    assert two_way_standard_error(flat) == pytest.approx(row_se, rel=0.2)


def test_mean_std_and_the_student_t_interval_of_a_few_seeds_by_hand():
    assert mean_std([49.0, None, 51.0]) == (50.0, pytest.approx(2 ** 0.5))  # sample std (n - 1), None left out
    assert mean_std([3.0]) == (3.0, 0.0) and mean_std([None]) == (None, None)
    lo, hi = t_interval(-2.0, 0.2, 3)
    half = 4.302653 * 0.2 / 3 ** 0.5  # t_{0.975, 2} = 4.302653
    assert lo == pytest.approx(-2.0 - half) and hi == pytest.approx(-2.0 + half)
    assert t_interval(1.0, 0.5, 1) == (None, None)


def test_a_device_the_machine_lacks_is_a_usage_error():
    from patronus_diffusion.utils.device import pick_device
    from patronus_diffusion.utils.errors import UsageError

    assert pick_device("cpu").type == "cpu"
    for bad in ("nonsense", "cuda:99" if torch.cuda.is_available() else "cuda"):
        with pytest.raises(UsageError):
            pick_device(bad)
