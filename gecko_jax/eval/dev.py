"""Dev sets for model selection, carved from *training* data only (issue 15): never the test sets we report.

* ``stsb_dev``: STS-B dev (1,500 pairs), Spearman × 100 — the STS-B training pairs and test pairs are not touched.
* ``scifact_dev``: a held-out slice of the SciFact **train** qrels (``fraction`` of the train queries, by a hash of
  the query id: :func:`gecko_jax.data.mixture.dev_split`), retrieved from a sub-corpus (their relevant abstracts +
  ``extra_docs`` others, seeded) so one dev evaluation costs ~1/4 of a corpus encode; nDCG@10 × 100. The training
  converter drops exactly these queries (:func:`scifact_train_queries`).
* ``banking77_dev``: ``per_label`` rows of each intent held out of Banking77 **train**
  (:func:`gecko_jax.data.mixture.stratified_dev_split`), classified with the MTEB protocol (8 examples per label
  from the remaining train rows, ``runs`` runs); accuracy × 100. The training converter drops these rows.

Every dev task is encoded the way the matching test task is: with ``task_prompts="gecko"`` the same task strings
(``gecko_jax.eval.suites.TASKS``), with ``None`` raw text.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random

import numpy as np

from gecko_jax.eval.beir import BeirData, load_beir
from gecko_jax.eval.cache import EmbeddingCache
from gecko_jax.eval.datasets import LabeledText, data_root, load_banking77

SCIFACT_DEV_SALT = "scifact-train-dev"
DEV_TASKS = ("scifact_dev", "stsb_dev", "banking77_dev")


@dataclasses.dataclass(frozen=True)
class DevConfig:
    """Which training rows become dev data (changing a field changes what training may use).

    Attributes:
      scifact_fraction: share of SciFact train queries held out (by hash of the query id).
      scifact_extra_docs: non-relevant abstracts added to the dev sub-corpus (seeded sample).
      banking77_per_label: Banking77 train rows per intent held out.
      banking77_runs: MTEB-protocol runs averaged on the dev slice (test: 10).
    """

    scifact_fraction: float = 0.2
    scifact_extra_docs: int = 1000
    banking77_per_label: int = 10
    banking77_runs: int = 3

    def __post_init__(self):
        if not 0.0 < self.scifact_fraction < 1.0:
            raise ValueError(f"dev.scifact_fraction: expected a fraction in (0, 1), got {self.scifact_fraction}")
        if self.scifact_extra_docs < 0 or self.banking77_per_label < 1 or self.banking77_runs < 1:
            raise ValueError(f"dev: expected scifact_extra_docs >= 0, banking77_per_label >= 1, banking77_runs >= 1; "
                             f"got {self}")


def scifact_train_queries(qrels: dict, fraction: float) -> tuple[list[str], list[str]]:
    """``(training query ids, dev query ids)`` of SciFact's train qrels."""
    from gecko_jax.data.mixture import dev_split

    return dev_split(sorted(qrels, key=lambda q: (len(q), q)), fraction, salt=SCIFACT_DEV_SALT)


def banking77_split(labels, per_label: int) -> tuple[list[int], list[int]]:
    """``(training row indices, dev row indices)`` of Banking77 train."""
    from gecko_jax.data.mixture import stratified_dev_split

    return stratified_dev_split(list(labels), per_label, seed=0)


def scifact_dev_data(root=None, cfg: DevConfig = DevConfig()) -> BeirData:
    """The SciFact dev retrieval set (module docstring) as a :class:`BeirData`."""
    full = load_beir(data_root(root) / "scifact", split="train")
    _, dev_q = scifact_train_queries(full.qrels, cfg.scifact_fraction)
    qrels = {q: full.qrels[q] for q in dev_q}
    relevant = {d for j in qrels.values() for d in j}
    others = [d for d in full.corpus if d not in relevant]
    extra = set(random.Random(f"{SCIFACT_DEV_SALT}|docs").sample(others, min(cfg.scifact_extra_docs, len(others))))
    corpus = {d: doc for d, doc in full.corpus.items() if d in relevant or d in extra}
    h = hashlib.sha256(full.corpus_fingerprint.encode())
    h.update("\x1f".join(corpus).encode())
    corpus_fp = h.hexdigest()
    h.update("\x1f".join(sorted(qrels)).encode())
    return BeirData(corpus=corpus, queries={q: full.queries[q] for q in dev_q}, qrels=qrels, warnings={},
                    fingerprint=h.hexdigest(), corpus_fingerprint=corpus_fp, path=full.path, split="train-dev")


def banking77_dev_data(root=None, cfg: DevConfig = DevConfig()) -> LabeledText:
    """Banking77 dev: train pool = the training rows, test = the held-out rows (module docstring)."""
    b = load_banking77(root)
    tr, dev = banking77_split(b.train_labels, cfg.banking77_per_label)
    fp = hashlib.sha256(f"{b.fingerprint}|dev{cfg.banking77_per_label}".encode()).hexdigest()
    return LabeledText("banking77_dev", [b.train_texts[i] for i in tr], b.train_labels[tr],
                       [b.train_texts[i] for i in dev], b.train_labels[dev], b.label_names, fp)


def evaluate_dev(embedder, *, task_prompts=None, root=None, cfg: DevConfig = DevConfig(),
                 cache: EmbeddingCache | None = None, tasks=DEV_TASKS, dims=None) -> dict[str, float]:
    """``{dev task: main score}`` of ``embedder`` (``task_prompts``: ``"gecko"`` or None, as in ``run_suite``)."""
    from gecko_jax.eval.classification import evaluate_classification
    from gecko_jax.eval.retrieval import evaluate_retrieval
    from gecko_jax.eval.sts import evaluate_sts
    from gecko_jax.eval.suites import TASKS

    unknown = [t for t in tasks if t not in DEV_TASKS]
    if unknown:
        raise ValueError(f"unknown dev task(s) {unknown}; known: {list(DEV_TASKS)}")
    if task_prompts not in (None, "gecko"):
        raise ValueError(f"task_prompts must be None or 'gecko', got {task_prompts!r}")

    def task(name):
        return TASKS[name].gecko_task if task_prompts == "gecko" else None

    root = data_root(root)
    cache = cache or EmbeddingCache(None)
    out = {}
    if "scifact_dev" in tasks:
        out["scifact_dev"] = evaluate_retrieval(embedder, scifact_dev_data(root, cfg), task=task("scifact"),
                                                dims=dims, cache=cache)["main_score"]
    if "stsb_dev" in tasks:
        out["stsb_dev"] = evaluate_sts(embedder, root / "stsb" / "sts-dev.csv", task=task("stsb"),
                                       symmetric=True, dims=dims, cache=cache)["main_score"]
    if "banking77_dev" in tasks:
        out["banking77_dev"] = evaluate_classification(embedder, banking77_dev_data(root, cfg), task=task("banking77"),
                                                       dims=dims, n_experiments=cfg.banking77_runs,
                                                       cache=cache)["main_score"]
    return {k: float(v) for k, v in out.items()}


def select(candidates: dict, reference: dict) -> tuple[object, dict]:
    """The candidate whose *smallest* dev gain over ``reference`` is largest (ties: the larger mean gain).

    Max-min because the aim is a model better on every family, not on average. Returns ``(key, gains by key)``.

    Args:
      candidates: key -> {dev task: score}. reference: {dev task: score} (the base model).
    """
    if not candidates:
        raise ValueError("select: no candidates")
    gains = {k: {t: float(v[t]) - float(reference[t]) for t in reference} for k, v in candidates.items()}
    best = max(gains, key=lambda k: (min(gains[k].values()), float(np.mean(list(gains[k].values())))))
    return best, gains
