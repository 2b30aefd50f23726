"""gecko_jax.eval.compare: t intervals of a difference between two models' repeated measurements."""
import numpy as np
import pytest
from scipy import stats

from gecko_jax.eval import difference


def test_paired_interval_matches_one_sample_t_on_the_differences():
    rng = np.random.default_rng(0)
    a = rng.normal(70, 3, size=10)
    b = a + 0.5 + rng.normal(0, 0.2, size=10)
    d = difference(a, b, paired=True)
    lo, hi = stats.t.interval(0.95, 9, loc=np.mean(b - a), scale=stats.sem(b - a))
    assert d.mean == pytest.approx(np.mean(b - a)) and d.low == pytest.approx(lo) and d.high == pytest.approx(hi)
    # the shared draw noise (sd 3) cancels in pairs: the shift is detected paired, not unpaired
    assert d.significant and d.low > 0
    assert not difference(a, b, paired=False).significant


def test_unpaired_interval_is_welch():
    rng = np.random.default_rng(1)
    a, b = rng.normal(50, 5, size=6), rng.normal(53, 1, size=9)
    d = difference(a, b, paired=False)
    res = stats.ttest_ind(b, a, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((lo, hi)) and d.mean == pytest.approx(b.mean() - a.mean())


def test_sign_and_errors():
    assert difference([1.0, 1.1, 0.9], [0.0, 0.1, -0.1], paired=True).high < 0
    with pytest.raises(ValueError, match="equal lengths"):
        difference([1, 2, 3], [1, 2], paired=True)
    with pytest.raises(ValueError, match="at least 2"):
        difference([1], [1, 2], paired=False)
    with pytest.raises(ValueError, match="confidence"):
        difference([1, 2], [1, 2], paired=True, confidence=1.0)
