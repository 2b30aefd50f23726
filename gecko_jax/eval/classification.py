"""Classification and clustering on frozen embeddings, following MTEB's protocols.

Classification (MTEB 1.x ``AbsTaskClassification`` + ``logRegClassificationEvaluator``):
``n_experiments = 10`` runs; in each, the train-pool indices are reshuffled with ``numpy.random.default_rng(42)``
(applied to the previous run's order, as MTEB does) and the first ``samples_per_label = 8`` examples of each label
are kept; ``LogisticRegression(max_iter=100, random_state=42)`` is fit on their embeddings and scored on the whole
test split (encoded once). Accuracy and macro-F1 (× 100) are averaged over the runs.

Clustering (MTEB ``ClusteringEvaluator``): ``MiniBatchKMeans(n_clusters = #labels, batch_size=500, n_init="auto")``
on the embeddings, V-measure (× 100) against the labels; averaged over ``n_runs`` seeds (0, 1, ...), since k-means
depends on its initialisation.
"""
from __future__ import annotations

import hashlib
import time
from collections import defaultdict

import numpy as np

from gecko_jax.eval.cache import EmbeddingCache
from gecko_jax.vectors import truncate
from gecko_jax.eval.datasets import CLASSIFICATION_LOADERS, LabeledText


def undersample_indices(labels: np.ndarray, samples_per_label: int, n_experiments: int, seed: int = 42) -> list[np.ndarray]:
    """MTEB's bootstrap: per experiment, reshuffle the running index order and keep ``samples_per_label`` per label.

    Args:
      labels: ``[n]`` int labels of the train pool.
      samples_per_label: at most this many examples of each label per experiment.
      n_experiments: number of experiments.
      seed: the RNG seed (MTEB: 42), a fresh ``default_rng(seed)`` per experiment.

    Returns:
      One index array per experiment, in the sampled order.
    """
    if samples_per_label < 1 or n_experiments < 1:
        raise ValueError(f"samples_per_label and n_experiments must be >= 1, got {samples_per_label}, {n_experiments}")
    idxs = np.arange(len(labels))
    out = []
    for _ in range(n_experiments):
        np.random.default_rng(seed).shuffle(idxs)
        counter: dict[int, int] = defaultdict(int)
        chosen = []
        for i in idxs:
            if counter[labels[i]] < samples_per_label:
                chosen.append(i)
                counter[labels[i]] += 1
        out.append(np.asarray(chosen, dtype=np.int64))
    return out


def logreg_scores(x_train, y_train, x_test, y_test, *, max_iter: int = 100, seed: int = 42) -> dict[str, float]:
    """Fit ``LogisticRegression(max_iter, random_state=seed)``; accuracy and macro-F1 × 100 on the test set."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # MTEB's protocol caps iterations at 100 on purpose; lbfgs warns when it stops there.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return {"accuracy": 100.0 * accuracy_score(y_test, pred), "f1": 100.0 * f1_score(y_test, pred, average="macro")}


def _encode_subset(embedder, texts, idx, data_fp, split, task, cache, batch_size):
    h = hashlib.sha256(data_fp.encode())
    h.update(split.encode())
    h.update(np.asarray(idx, np.int64).tobytes())
    fmt = {"kind": "query", "task": task, "symmetric": True}
    return cache.get_or_encode(embedder, [texts[i] for i in idx], data_fp=h.hexdigest(), fmt=fmt, task=task,
                               kind="query", batch_size=batch_size)


def evaluate_classification(embedder, data, *, task: str | None = None, dims=None, n_experiments: int = 10,
                            samples_per_label: int = 8, max_iter: int = 100, seed: int = 42,
                            cache: EmbeddingCache | None = None, batch_size: int | None = None,
                            data_root=None) -> dict:
    """MTEB-protocol logistic-regression classification (see module docstring).

    Args:
      embedder: object with ``encode``.
      data: a :class:`LabeledText` or a name in ``("banking77", "sst2", "mr", "ag_news")``.
      task: Gecko task string (``"classification"``) or ``None``; texts are encoded as queries.
      dims: int, ``None`` or a sequence of them.
      n_experiments, samples_per_label, max_iter, seed: the protocol's knobs (MTEB defaults).
      cache: optional :class:`EmbeddingCache`. batch_size: passed to ``encode``. data_root: data folder.

    Returns:
      ``{"metrics": {"accuracy", "f1", "accuracy_std"}, "runs": [accuracy of experiment r], "main_score": accuracy,
      ...}`` (or a dict by dims). ``runs`` are paired across models (the same draws for every embedder), which is what
      :func:`gecko_jax.eval.compare.paired_difference` needs.
    """
    if isinstance(data, str):
        if data not in CLASSIFICATION_LOADERS:
            raise ValueError(f"unknown classification set {data!r}; expected one of {sorted(CLASSIFICATION_LOADERS)}")
        data = CLASSIFICATION_LOADERS[data](data_root)
    if not isinstance(data, LabeledText):
        raise TypeError(f"data must be a LabeledText or a dataset name, got {type(data).__name__}")
    cache = cache or EmbeddingCache(None)
    runs = undersample_indices(data.train_labels, samples_per_label, n_experiments, seed)
    union = np.unique(np.concatenate(runs))
    t0 = time.perf_counter()
    x_pool = _encode_subset(embedder, data.train_texts, union, data.fingerprint, "train", task, cache, batch_size)
    x_test = _encode_subset(embedder, data.test_texts, np.arange(len(data.test_texts)), data.fingerprint, "test",
                            task, cache, batch_size)
    t_enc = time.perf_counter() - t0
    row_of = {int(i): r for r, i in enumerate(union)}
    many = isinstance(dims, (list, tuple))
    out = {}
    for d in (dims if many else [dims]):
        t0 = time.perf_counter()
        pool_d, test_d = truncate(x_pool, d), truncate(x_test, d)
        per_run = [logreg_scores(pool_d[[row_of[int(i)] for i in run]], data.train_labels[run], test_d,
                                 data.test_labels, max_iter=max_iter, seed=seed) for run in runs]
        acc = [r["accuracy"] for r in per_run]
        out[d] = {"metrics": {"accuracy": float(np.mean(acc)), "f1": float(np.mean([r["f1"] for r in per_run])),
                              "accuracy_std": float(np.std(acc))},
                  "runs": [float(a) for a in acc], "main_score": float(np.mean(acc)), "dims": d or x_test.shape[1],
                  "task": task,
                  "num_train_per_run": int(len(runs[0])), "num_test": len(data.test_texts),
                  "n_experiments": n_experiments, "samples_per_label": samples_per_label,
                  "seconds": {"encode": t_enc, "fit": time.perf_counter() - t0}}
    return out if many else out[dims]


def v_measure_kmeans(x: np.ndarray, labels: np.ndarray, *, n_runs: int = 3, batch_size: int = 500) -> tuple[float, float]:
    """Mean and std of V-measure × 100 of ``MiniBatchKMeans(#labels)`` over seeds ``0..n_runs-1``."""
    scores = v_measure_runs(x, labels, n_runs=n_runs, batch_size=batch_size)
    return float(np.mean(scores)), float(np.std(scores))


def v_measure_runs(x: np.ndarray, labels: np.ndarray, *, n_runs: int = 3, batch_size: int = 500) -> list[float]:
    """V-measure × 100 of ``MiniBatchKMeans(#labels)`` with seed ``s``, for ``s`` in ``0..n_runs-1``."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    k = len(np.unique(labels))
    if k < 2:
        raise ValueError(f"clustering needs at least 2 distinct labels, got {k}")
    scores = []
    for s in range(n_runs):
        pred = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init="auto", random_state=s).fit_predict(x)
        scores.append(float(100.0 * v_measure_score(labels, pred)))
    return scores


def evaluate_clustering(embedder, data="banking77", *, split: str = "test", task: str | None = None, dims=None,
                        n_runs: int = 3, cache: EmbeddingCache | None = None, batch_size: int | None = None,
                        data_root=None) -> dict:
    """Mini-batch k-means V-measure of embeddings against labels (e.g. Banking77 test texts by intent).

    Args:
      embedder: object with ``encode``.
      data: a :class:`LabeledText` or dataset name; its ``split`` (``"test"`` or ``"train"``) is clustered.
      task: Gecko task string (``"classification"`` in the ``gecko`` suites, see :mod:`gecko_jax.eval.suites`) or
        ``None``.
      dims: int, ``None`` or a sequence. n_runs: k-means seeds averaged.
      cache, batch_size, data_root: as in :func:`evaluate_classification`.

    Returns:
      ``{"metrics": {"v_measure", "v_measure_std"}, "runs": [V-measure of seed s], "main_score", "num_texts",
      "num_clusters", ...}``.
    """
    if isinstance(data, str):
        if data not in CLASSIFICATION_LOADERS:
            raise ValueError(f"unknown clustering set {data!r}; expected one of {sorted(CLASSIFICATION_LOADERS)}")
        data = CLASSIFICATION_LOADERS[data](data_root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    texts = data.test_texts if split == "test" else data.train_texts
    labels = data.test_labels if split == "test" else data.train_labels
    cache = cache or EmbeddingCache(None)
    t0 = time.perf_counter()
    x = _encode_subset(embedder, texts, np.arange(len(texts)), data.fingerprint, split, task, cache, batch_size)
    t_enc = time.perf_counter() - t0
    many = isinstance(dims, (list, tuple))
    out = {}
    for d in (dims if many else [dims]):
        runs = v_measure_runs(truncate(x, d), labels, n_runs=n_runs)
        mean = float(np.mean(runs))
        out[d] = {"metrics": {"v_measure": mean, "v_measure_std": float(np.std(runs))}, "runs": runs,
                  "main_score": mean, "dims": d or x.shape[1],
                  "task": task, "num_texts": len(texts), "num_clusters": int(len(np.unique(labels))),
                  "seconds": {"encode": t_enc}}
    return out if many else out[dims]
