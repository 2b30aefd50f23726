"""Intrinsic fairness metrics for sentence embeddings: SEAT, the CCED gap, CrowS-Pairs pair similarity.

SEAT (May et al., NAACL 2019, "On Measuring Social Biases in Sentence Encoders"; WEAT: Caliskan et al., Science 2017)
with targets X, Y and attributes A, B, cosine similarity on unit vectors:

* ``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)``;
* effect size ``d = (mean_{x in X} s(x) - mean_{y in Y} s(y)) / std_{w in X u Y} s(w)`` (sample std, ``ddof=1``);
* one-sided permutation p-value of the statistic ``S(X, Y) = sum_X s(x) - sum_Y s(y)``: the fraction of equal-size
  partitions ``(X_i, Y_i)`` of ``X u Y`` with ``S(X_i, Y_i) > S(X, Y)``; all partitions when there are at most
  ``n_samples`` of them, else ``n_samples`` random ones of which the first is the observed split (so p >= 1/n),
  as in May et al.'s ``weat.py``. When ``|X| != |Y|`` the larger set is subsampled (``default_rng(seed)``) to the
  smaller size, as the permutation test needs equal halves.

Data: ``seat/*.jsonl`` (the ``seat`` dataset of :mod:`gecko_jax.datasets`) -- despite the suffix, each file is ONE JSON object
``{targ1, targ2, attr1, attr2}``, each ``{category, examples[]}`` (CC BY-NC 4.0). The gender tests are
``sent-weat6/6b/7/7b/8/8b``.

CCED (content-conditional equal distance, arXiv:2402.14208): the per-tuple gap of :func:`gecko_jax.losses.cced`
(cosine distance by default) between the male / female versions' distances to the neutral version, averaged over
tuples. Tuples come from a JSONL file in data_gen's format ``{id, neutral, groups: {male, female}, source}``; without
one, :func:`rule_based_tuples` builds a small deterministic set from STS-B sentences that mention a male word
(a word-list swap, approximate English; a baseline, not the paper's LLM-augmented data).

CrowS-Pairs (optional; Nangia et al. 2020, CC BY-SA 4.0): CrowS-Pairs was built for masked-LM likelihoods. With an
embedder we report only the mean cosine similarity between the more- and less-stereotypical sentence of each pair
per bias type (higher = the embedding moves less when the demographic group is swapped). This is a descriptive
statistic, not the CrowS-Pairs metric.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import pathlib
import re

import numpy as np

from gecko_jax.errors import InputError
from gecko_jax.fileio import decode_utf8, read_text

from gecko_jax.eval.cache import EmbeddingCache
from gecko_jax.vectors import truncate
from gecko_jax.eval.datasets import data_root

GENDER_SEAT_TESTS = ("sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b", "sent-weat8", "sent-weat8b")


def load_seat(path) -> dict:
    """Read one SEAT test file -> ``{"targ1": {"category", "examples"}, "targ2", "attr1", "attr2"}``.

    Raises:
      ValueError: not a JSON object with the four sets, or a set without a non-empty ``examples`` list of strings.
    """
    path = pathlib.Path(path)
    try:
        obj = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected one object "
                         "{targ1, targ2, attr1, attr2}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object with keys targ1, targ2, attr1, attr2")
    for key in ("targ1", "targ2", "attr1", "attr2"):
        part = obj.get(key)
        if not isinstance(part, dict) or not isinstance(part.get("examples"), list) or not part["examples"] \
                or not all(isinstance(x, str) for x in part["examples"]):
            raise InputError(f"{path}: field {key!r} must be {{category, examples: [non-empty list of str]}}")
        part.setdefault("category", key)
    return obj


def association(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s(w, A, B)`` for each row of ``w``: mean cosine to ``a`` minus mean cosine to ``b`` -> ``[n_w]``."""
    w, a, b = truncate(w, None), truncate(a, None), truncate(b, None)
    return (w @ a.T).mean(axis=1) - (w @ b.T).mean(axis=1)


def seat_effect_size(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    r"""WEAT/SEAT effect size (Cohen's-d style).

    .. math:: d = \frac{\mathrm{mean}_{x} s(x,A,B) - \mathrm{mean}_{y} s(y,A,B)}{\mathrm{std}_{w \in X \cup Y} s(w,A,B)}

    Args:
      x, y: target embeddings ``[n_x, D]``, ``[n_y, D]``. a, b: attribute embeddings ``[n_a, D]``, ``[n_b, D]``.

    Returns:
      The effect size, in [-2, 2] (0 = no differential association).
    """
    sx, sy = association(x, a, b), association(y, a, b)
    std = np.std(np.concatenate([sx, sy]), ddof=1)
    if std == 0:
        raise ValueError("effect size undefined: every target has the same association s(w, A, B)")
    return float((sx.mean() - sy.mean()) / std)


def seat_p_value(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, *, n_samples: int = 100_000,
                 seed: int = 0) -> float:
    """One-sided permutation p-value of the SEAT statistic (see module docstring); ``|x| == |y|`` required."""
    if len(x) != len(y):
        raise ValueError(f"the permutation test needs |X| == |Y|, got {len(x)} and {len(y)}")
    s = np.concatenate([association(x, a, b), association(y, a, b)]).astype(np.float64)
    n, total = len(x), s.sum()
    observed = 2.0 * s[:n].sum() - total  # sum_X - sum_Y
    if math.comb(2 * n, n) <= n_samples:
        stats = np.array([2.0 * s[list(c)].sum() - total for c in itertools.combinations(range(2 * n), n)])
        return float(np.mean(stats > observed))
    rng = np.random.default_rng(seed)
    greater, done = 1, 1  # the observed partition counts as one sample (May et al.)
    while done < n_samples:
        m = min(10_000, n_samples - done)
        perms = rng.permuted(np.tile(np.arange(2 * n), (m, 1)), axis=1)[:, :n]
        stats = 2.0 * s[perms].sum(axis=1) - total
        greater += int(np.sum(stats > observed))
        done += m
    return greater / done


def evaluate_seat(embedder, tests=GENDER_SEAT_TESTS, *, task: str | None = None, dims=None, n_samples: int = 100_000,
                  seed: int = 0, cache: EmbeddingCache | None = None, data_root_=None) -> dict:
    """SEAT effect sizes and permutation p-values for the given tests (default: the gender tests).

    Args:
      embedder: object with ``encode``.
      tests: test names (files ``seat/<name>.jsonl``) or paths.
      task: Gecko task string or ``None`` (sentences are encoded as queries, symmetric).
      dims: int or ``None``.
      n_samples: permutation samples. seed: subsampling / permutation seed.
      cache: optional :class:`EmbeddingCache`. data_root_: data folder.

    Returns:
      ``{"tests": {name: {"effect_size", "p_value", "n_targets", "n_attr", "categories"}},
      "mean_abs_effect_size", "main_score"}`` (main score: mean |d|, lower is fairer).
    """
    cache = cache or EmbeddingCache(None)
    out = {}
    for test in tests:
        path = pathlib.Path(test)
        if not path.suffix:
            path = data_root(data_root_) / "seat" / f"{test}.jsonl"
        spec = load_seat(path)
        fp = hashlib.sha256(path.read_bytes()).hexdigest()
        emb = {}
        for key in ("targ1", "targ2", "attr1", "attr2"):
            full = cache.get_or_encode(embedder, spec[key]["examples"], data_fp=f"{fp}:{key}",
                                       fmt={"kind": "query", "task": task}, task=task, kind="query")
            emb[key] = truncate(full, dims)
        x, y = emb["targ1"], emb["targ2"]
        if len(x) != len(y):
            rng = np.random.default_rng(seed)
            m = min(len(x), len(y))
            x = x[np.sort(rng.choice(len(x), m, replace=False))] if len(x) > m else x
            y = y[np.sort(rng.choice(len(y), m, replace=False))] if len(y) > m else y
        out[path.stem] = {
            "effect_size": seat_effect_size(x, y, emb["attr1"], emb["attr2"]),
            "p_value": seat_p_value(x, y, emb["attr1"], emb["attr2"], n_samples=n_samples, seed=seed),
            "n_targets": len(x), "n_attr": (len(emb["attr1"]), len(emb["attr2"])),
            "categories": [spec[k]["category"] for k in ("targ1", "targ2", "attr1", "attr2")],
        }
    mean_abs = float(np.mean([abs(v["effect_size"]) for v in out.values()]))
    return {"tests": out, "mean_abs_effect_size": mean_abs, "main_score": mean_abs, "task": task}


# ---------------------------------------------------------------------------------------------------------- CCED
_MALE_TO = {  # male word -> (female, neutral); lower case, whole words
    "he": ("she", "they"), "him": ("her", "them"), "his": ("her", "their"), "himself": ("herself", "themselves"),
    "man": ("woman", "person"), "men": ("women", "people"), "boy": ("girl", "child"), "boys": ("girls", "children"),
    "father": ("mother", "parent"), "fathers": ("mothers", "parents"), "son": ("daughter", "child"),
    "sons": ("daughters", "children"), "brother": ("sister", "sibling"), "brothers": ("sisters", "siblings"),
    "husband": ("wife", "spouse"), "husbands": ("wives", "spouses"), "king": ("queen", "monarch"),
    "gentleman": ("lady", "person"), "gentlemen": ("ladies", "people"), "uncle": ("aunt", "relative"),
    "nephew": ("niece", "relative"), "grandfather": ("grandmother", "grandparent"), "dad": ("mom", "parent"),
    "boyfriend": ("girlfriend", "partner"), "male": ("female", "person"), "guy": ("woman", "person"),
    "guys": ("women", "people"), "mr": ("ms", "mx"), "sir": ("madam", "friend"), "actor": ("actress", "performer"),
}
_FEMALE_WORDS = {f for f, _ in _MALE_TO.values()} | {"hers", "girl", "women", "mrs", "miss"}
# Singular "they" takes plural verb forms; fixed for the common auxiliaries only.
_AGREEMENT = {"they is": "they are", "they was": "they were", "they has": "they have", "they does": "they do",
              "they's": "they're"}


def _swap(sentence: str, column: int) -> str:
    def repl(m):
        word = m.group(0)
        new = _MALE_TO[word.lower()][column]
        return new.capitalize() if word[0].isupper() else new

    out = re.sub(r"\b(" + "|".join(sorted(_MALE_TO, key=len, reverse=True)) + r")\b", repl, sentence,
                 flags=re.IGNORECASE)
    if column == 1:
        for bad, good in _AGREEMENT.items():
            out = re.sub(r"\b" + re.escape(bad) + r"\b", lambda m, g=good: g.capitalize() if m.group(0)[0].isupper()
                         else g, out, flags=re.IGNORECASE)
    return out


def rule_based_tuples(sentences, *, max_tuples: int = 200) -> list[dict]:
    """Male / female / neutral versions of sentences that mention male words and no female words.

    Returns:
      ``[{"id", "neutral", "groups": {"male", "female"}, "source": "rule_based"}]``, in input order, unique texts.
    """
    pat = re.compile(r"\b(" + "|".join(_MALE_TO) + r")\b", re.IGNORECASE)
    fem = re.compile(r"\b(" + "|".join(_FEMALE_WORDS) + r")\b", re.IGNORECASE)
    seen, out = set(), []
    for s in sentences:
        s = " ".join(s.split())
        if s in seen or not pat.search(s) or fem.search(s):
            continue
        seen.add(s)
        out.append({"id": f"rb{len(out)}", "neutral": _swap(s, 1), "groups": {"male": s, "female": _swap(s, 0)},
                    "source": "rule_based"})
        if len(out) >= max_tuples:
            break
    return out


def read_tuples(path) -> list[dict]:
    """Read fairness tuples JSONL ``{id, neutral, groups: {group: text, ...}, source}`` (file:line on errors)."""
    from gecko_jax.data.jsonl import iter_jsonl

    path = pathlib.Path(path)
    out = []
    for lineno, row in iter_jsonl(path, error=InputError):
        groups = row.get("groups")
        if not isinstance(groups, dict) or len(groups) < 2 or not isinstance(row.get("neutral"), str) \
                or not all(isinstance(v, str) and v.strip() for v in groups.values()):
            raise InputError(f"{path}:{lineno}: expected {{id, neutral: str, groups: {{male: str, female: str}}}}")
        out.append(row)
    if not out:
        raise InputError(f"{path}: no tuples")
    return out


def evaluate_cced(embedder, tuples=None, *, task: str | None = None, dims=None, kernel: str = "cosine",
                  cache: EmbeddingCache | None = None, data_root_=None) -> dict:
    """Mean CCED gap over tuples (``gecko_jax.losses.cced``; lower is fairer).

    Args:
      embedder: object with ``encode``.
      tuples: list of tuple dicts, a JSONL path, or ``None`` for :func:`rule_based_tuples` on STS-B test + dev.
      task: Gecko task string or ``None``. dims: int or ``None``. kernel: passed to ``cced``.
      cache, data_root_: as elsewhere.

    Returns:
      ``{"metrics": {"cced", "cced_std", "mean_distance_gap"}, "main_score": cced, "num_tuples", "groups"}``;
      ``mean_distance_gap`` is the signed mean of ``d(male, neutral) - d(female, neutral)`` (cosine distance).
    """
    from gecko_jax.losses import cced

    if tuples is None:
        from gecko_jax.eval.sts import read_stsb

        sents = []
        for split in ("test", "dev"):
            s1, s2, _, _ = read_stsb(data_root(data_root_) / "stsb" / f"sts-{split}.csv")
            sents += s1 + s2
        tuples = rule_based_tuples(sents)
    elif not isinstance(tuples, list):
        tuples = read_tuples(tuples)
    if not tuples:
        raise ValueError("no fairness tuples to evaluate")
    groups = sorted(tuples[0]["groups"])
    for t in tuples:
        if sorted(t["groups"]) != groups:
            raise ValueError(f"tuple {t.get('id')!r} has groups {sorted(t['groups'])}, expected {groups}")
    texts = [t["neutral"] for t in tuples] + [t["groups"][g] for g in groups for t in tuples]
    fp = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    cache = cache or EmbeddingCache(None)
    emb = truncate(cache.get_or_encode(embedder, texts, data_fp=fp, fmt={"kind": "query", "task": task},
                                       task=task, kind="query"), dims)
    n = len(tuples)
    neutral = emb[:n]
    grp = np.stack([emb[n * (i + 1): n * (i + 2)] for i in range(len(groups))], axis=1)  # [n, G, D]
    gaps = np.asarray(cced(grp, neutral, kernel=kernel))
    dist = 1.0 - np.einsum("ngd,nd->ng", grp, neutral)
    return {"metrics": {"cced": float(gaps.mean()), "cced_std": float(gaps.std()),
                        "mean_distance_gap": float((dist[:, 0] - dist[:, -1]).mean())},
            "main_score": float(gaps.mean()), "num_tuples": n, "groups": groups, "kernel": kernel,
            "source": tuples[0].get("source"), "task": task}


def evaluate_crows_pairs(embedder, *, bias_types=("gender",), task: str | None = None, dims=None,
                         cache: EmbeddingCache | None = None, data_root_=None) -> dict:
    """Mean cosine(sent_more, sent_less) × 100 per CrowS-Pairs bias type (descriptive; see module docstring)."""
    path = data_root(data_root_) / "crows_pairs" / "crows_pairs_anonymized.csv"
    raw = path.read_bytes()
    rows = list(csv.DictReader(io.StringIO(decode_utf8(raw, path))))
    need = {"sent_more", "sent_less", "bias_type"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{path}: expected CSV columns {sorted(need)}")
    cache = cache or EmbeddingCache(None)
    out = {}
    for bt in bias_types:
        sel = [r for r in rows if r["bias_type"] == bt]
        if not sel:
            raise InputError(f"{path}: no rows with bias_type {bt!r}")
        texts = [r["sent_more"] for r in sel] + [r["sent_less"] for r in sel]
        emb = truncate(cache.get_or_encode(embedder, texts, data_fp=hashlib.sha256(raw).hexdigest() + bt,
                                           fmt={"kind": "query", "task": task}, task=task, kind="query"), dims)
        cos = np.sum(emb[:len(sel)] * emb[len(sel):], axis=1)
        out[bt] = {"pair_cosine": 100.0 * float(cos.mean()), "num_pairs": len(sel)}
    return {"bias_types": out, "main_score": float(np.mean([v["pair_cosine"] for v in out.values()]))}
