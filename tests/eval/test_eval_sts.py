"""STS-B reader and Spearman evaluation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from gecko_jax.eval.sts import evaluate_sts, read_stsb


def test_read_stsb_test_split(shared_data):
    s1, s2, gold, fp = read_stsb(shared_data / "stsb" / "sts-test.csv")
    assert len(s1) == len(s2) == len(gold) == 1379
    assert s1[0] == "A girl is styling her hair." and s2[0] == "A girl is brushing her hair." and gold[0] == 2.5
    assert gold.min() >= 0 and gold.max() <= 5 and len(fp) == 64
    # Rows with unbalanced quotes stay intact under QUOTE_NONE (a csv default dialect would merge lines).
    assert any('"' in s for s in s1 + s2)


@pytest.mark.parametrize("row, message", [
    ("g\tf\ty\t1\t2.0\tonly one sentence", r"bad.csv:2: expected >= 7 tab-separated fields"),
    ("g\tf\ty\t1\thigh\ta\tb", r"bad.csv:2: field 5 \(score\) must be a number"),
    ("g\tf\ty\t1\t7.5\ta\tb", r"bad.csv:2: field 5 \(score\) must be in \[0, 5\]"),
])
def test_read_stsb_bad_rows(tmp_path, row, message):
    p = tmp_path / "bad.csv"
    p.write_text("g\tf\ty\t0\t1.0\ta b\tc d\textra\tcolumns\n" + row + "\n")
    with pytest.raises(ValueError, match=message):
        read_stsb(p)


def test_evaluate_sts_matches_scipy(tmp_path, bow):
    rows = [("a cat sits on the mat", "a cat is on the mat", 4.5), ("dogs run fast", "a dog is running", 3.0),
            ("the sky is blue", "stocks fell today", 0.2), ("he plays guitar", "he plays the guitar well", 4.0),
            ("rain in spain", "snow in norway", 1.0)]
    p = tmp_path / "sts.csv"
    p.write_text("".join(f"g\tf\ty\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows)))
    res = evaluate_sts(bow, p, dims=[None, 16])
    cos = [float(bow.vector(a) @ bow.vector(b)) for a, b, _ in rows]
    expected = 100 * spearmanr(cos, [s for *_, s in rows]).statistic
    assert res[None]["main_score"] == pytest.approx(expected, abs=1e-4)
    assert res[16]["dims"] == 16 and -100 <= res[16]["main_score"] <= 100
    # Each distinct sentence is encoded once, as a query, in one call.
    assert bow.calls[-1]["n"] == 10 and bow.calls[-1]["kind"] == "query"
    asym = evaluate_sts(bow, p, task="semantic similarity", symmetric=False)
    assert [c["kind"] for c in bow.calls[-2:]] == ["query", "document"]
    assert np.isfinite(asym["main_score"])
