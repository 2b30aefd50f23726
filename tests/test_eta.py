"""gecko_jax.eta: the quickstart's up-front time estimate scales with the work and the measured peak."""
import pytest

from gecko_jax import eta

DEFAULTS = dict(passages=48, neighbours=5, prefinetune_steps=20, steps=60)


def test_reference_run_is_reproduced_at_the_reference_peak():
    r = eta.REFERENCE
    est = eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS)
    # the defaults at the reference peak give the reference run's stage times (BENCHMARKS.md "Main job")
    assert est["fret"] == pytest.approx(r["fret"])
    assert est["eval_base"] == est["eval_tuned"] == pytest.approx(r["eval"])
    assert est["train"] == pytest.approx(r["train_fixed"] + 20 * r["prefinetune_step"] + 60 * r["step"])
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))


def test_scales_with_peak_and_work():
    r = eta.REFERENCE
    base = eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS)
    half = eta.estimate_quickstart(r["peak_gflops"] / 2, **DEFAULTS)
    assert half["total"] == pytest.approx(2 * base["total"])
    more = eta.estimate_quickstart(r["peak_gflops"], **{**DEFAULTS, "passages": 96, "steps": 120})
    assert more["fret"] == pytest.approx(2 * base["fret"])
    assert more["train"] - base["train"] == pytest.approx(60 * r["step"])
    cached = eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS, eval_base=False)
    assert cached["eval_base"] == 0 and cached["total"] == pytest.approx(base["total"] - base["eval_base"])
    pool = eta.estimate_quickstart(r["peak_gflops"] / 2, **DEFAULTS, embed_pool=True)  # no shipped pool vectors
    assert pool["fret"] - half["fret"] == pytest.approx(2 * r["pool_embed"])
    line = eta.describe(base, r["peak_gflops"])
    assert line.startswith(f"estimated {base['total'] / 60:.0f} min") and "eval_base" in line


@pytest.mark.parametrize("peak", [0, -1.0, float("nan")])
def test_bad_peak_is_refused(peak):
    with pytest.raises(ValueError, match="peak_gflops"):
        eta.estimate_quickstart(peak, **DEFAULTS)


def test_measured_llm_rate_scales_only_the_llm_share():
    r = eta.REFERENCE
    base = eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS, llm_rate=r["llm_tokens_per_s"])
    assert base == pytest.approx(eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS))
    slow = eta.estimate_quickstart(r["peak_gflops"], **DEFAULTS, llm_rate=r["llm_tokens_per_s"] / 3)
    assert slow["fret"] - base["fret"] == pytest.approx(2 * r["fret_llm"])
    assert {k: v for k, v in slow.items() if k not in ("fret", "total")} == \
        {k: v for k, v in base.items() if k not in ("fret", "total")}
    # a slower matmul peak no longer stretches the measured LLM share
    half = eta.estimate_quickstart(r["peak_gflops"] / 2, **DEFAULTS, llm_rate=r["llm_tokens_per_s"])
    assert half["fret"] == pytest.approx(r["fret_llm"] + 2 * (r["fret"] - r["fret_llm"]))
    assert "LLM prompt rate" in eta.describe(slow, r["peak_gflops"], r["llm_tokens_per_s"] / 3)


@pytest.mark.parametrize("rate", [0, -5.0, float("nan")])
def test_bad_llm_rate_is_refused(rate):
    with pytest.raises(ValueError, match="llm_rate"):
        eta.estimate_quickstart(eta.REFERENCE["peak_gflops"], **DEFAULTS, llm_rate=rate)
