"""Evaluation suites: named task lists run on one embedder, printed as a table, saved as JSON + Markdown.

Suites (data found by :mod:`gecko_jax.datasets`; licences there and in the README; several sets are for
non-commercial research only):

* ``small`` — SciFact test nDCG@10, STS-B test Spearman, Banking77 accuracy (< 10 min on 2 CPU cores for MiniLM).
* ``full`` — small + SST-2, MR, AG News classification, Banking77 and AG News clustering.
* ``fairness`` — SEAT gender tests (effect sizes, p-values), CCED gap on tuples, CrowS-Pairs gender pair similarity.

Gecko task strings (PAPERS.md 1.4, Gecko Table 9; issue 15) are applied only with ``task_prompts="gecko"``: "fact
checking" (SciFact), "semantic similarity" (STS, symmetric), "classification" (classification and clustering, both
symmetric: texts are encoded as queries); the fairness probes use "semantic similarity" (our choice: Gecko names no
task for them). Clustering takes "classification", the string the fine-tuning mixture trains label structure with
(issue 15's reading of Table 9); PAPERS.md's reading of Table 9 gives "search result" for clustering, which
``task_prompts={"banking77_clustering": "search result", ...}`` selects. Every string the fine-tuning mixture
trains with (``gecko_jax.data.mixture``) is one of these, so a prompt-trained model is evaluated as it was trained. ``task_prompts=None`` encodes raw text
(documents ``title + " " + text``), which is what sentence-transformers models such as all-MiniLM-L6-v2 expect.
A dict ``{task_name: task string or None}`` overrides single tasks.
"""
from __future__ import annotations

import dataclasses
import datetime
import pathlib
import platform
import time
from collections.abc import Callable, Sequence

from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir, model_fingerprint
from gecko_jax.eval.datasets import data_root

LICENCE_NOTE = ("Data: public sets (gecko-jax datasets list). SciFact CC BY-NC 2.0, STS-B CC BY-SA 4.0 scores, "
                "Banking77 CC BY 4.0, SST-2/MR research use, AG News academic use, SEAT CC BY-NC 4.0, CrowS-Pairs "
                "CC BY-SA 4.0: several are for non-commercial research use only.")


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """One evaluation: ``run(embedder, dims, task_string, cache, root) -> result or {dims: result}``.

    Attributes:
      name: key in results. kind: retrieval / sts / classification / clustering / fairness.
      metric: name of the main score. gecko_task: Gecko task string used with ``task_prompts="gecko"``.
      higher_is_better: direction of the main score. run: the callable.
    """

    name: str
    kind: str
    metric: str
    gecko_task: str | None
    higher_is_better: bool
    run: Callable


def _retrieval(dataset: str):
    def run(emb, dims, task, cache, root):
        from gecko_jax.eval.retrieval import evaluate_retrieval

        return evaluate_retrieval(emb, root / dataset, split="test", task=task, dims=dims, cache=cache)
    return run


def _sts(emb, dims, task, cache, root):
    from gecko_jax.eval.sts import evaluate_sts

    return evaluate_sts(emb, root / "stsb" / "sts-test.csv", task=task, symmetric=True, dims=dims, cache=cache)


def _classification(name: str):
    def run(emb, dims, task, cache, root):
        from gecko_jax.eval.classification import evaluate_classification

        return evaluate_classification(emb, name, task=task, dims=dims, cache=cache, data_root=root)
    return run


def _clustering(name: str):
    def run(emb, dims, task, cache, root):
        from gecko_jax.eval.classification import evaluate_clustering

        return evaluate_clustering(emb, name, task=task, dims=dims, cache=cache, data_root=root)
    return run


def _per_dims(fn):
    """Adapt a single-dims evaluator to the ``dims`` sequence convention."""
    def run(emb, dims, task, cache, root):
        if isinstance(dims, (list, tuple)):
            return {d: fn(emb, d, task, cache, root) for d in dims}
        return fn(emb, dims, task, cache, root)
    return run


def _seat(emb, dims, task, cache, root):
    from gecko_jax.eval.fairness import evaluate_seat

    return evaluate_seat(emb, task=task, dims=dims, cache=cache, data_root_=root)


def _cced(emb, dims, task, cache, root):
    from gecko_jax.eval.fairness import evaluate_cced

    return evaluate_cced(emb, task=task, dims=dims, cache=cache, data_root_=root)


def _crows(emb, dims, task, cache, root):
    from gecko_jax.eval.fairness import evaluate_crows_pairs

    return evaluate_crows_pairs(emb, task=task, dims=dims, cache=cache, data_root_=root)


TASKS: dict[str, EvalTask] = {t.name: t for t in [
    EvalTask("scifact", "retrieval", "ndcg@10", "fact checking", True, _retrieval("scifact")),
    EvalTask("stsb", "sts", "spearman", "semantic similarity", True, _sts),
    EvalTask("banking77", "classification", "accuracy", "classification", True, _classification("banking77")),
    EvalTask("sst2", "classification", "accuracy", "classification", True, _classification("sst2")),
    EvalTask("mr", "classification", "accuracy", "classification", True, _classification("mr")),
    EvalTask("ag_news", "classification", "accuracy", "classification", True, _classification("ag_news")),
    EvalTask("banking77_clustering", "clustering", "v_measure", "classification", True, _clustering("banking77")),
    EvalTask("ag_news_clustering", "clustering", "v_measure", "classification", True, _clustering("ag_news")),
    EvalTask("seat_gender", "fairness", "mean abs effect size", "semantic similarity", False, _per_dims(_seat)),
    EvalTask("cced", "fairness", "cced (cosine)", "semantic similarity", False, _per_dims(_cced)),
    EvalTask("crows_pairs_gender", "fairness", "pair cosine x100", "semantic similarity", True, _per_dims(_crows)),
]}

SUITES: dict[str, tuple[str, ...]] = {
    "small": ("scifact", "stsb", "banking77"),
    "full": ("scifact", "stsb", "banking77", "sst2", "mr", "ag_news", "banking77_clustering", "ag_news_clustering"),
    "fairness": ("seat_gender", "cced", "crows_pairs_gender"),
}


def _task_string(task: EvalTask, task_prompts) -> str | None:
    if task_prompts is None:
        return None
    if task_prompts == "gecko":
        return task.gecko_task
    if isinstance(task_prompts, dict):
        return task_prompts.get(task.name, task.gecko_task)
    raise ValueError(f"task_prompts must be None, 'gecko' or a dict {{task name: str}}, got {task_prompts!r}")


def _dims_label(d, full_dim) -> str:
    return f"{d if d is not None else full_dim}" + ("" if d is not None else " (full)")


def run_suite(embedder, suite: str = "small", *, dims=None, out_dir=None, task_prompts=None, tasks: Sequence[str] | None = None,
              cache_dir="default", data_dir=None, verbose: bool = True) -> dict:
    """Run an evaluation suite, print a table, and write ``results.json`` + ``results.md`` to ``out_dir``.

    Args:
      embedder: object with ``encode(texts, *, task, kind, titles, ...)`` (e.g. :class:`gecko_jax.Embedder`).
      suite: ``"small"``, ``"full"`` or ``"fairness"``.
      dims: ``None`` (full width), an int, or a sequence of them (``[None, 256]`` gives a Matryoshka table; every
        task encodes once and truncates).
      out_dir: folder for ``results.json`` and ``results.md``; ``None`` writes nothing.
      task_prompts: ``None`` (raw text), ``"gecko"`` (Gecko task strings) or a dict task name -> string.
      tasks: run only these task names (must be known; need not be in the suite).
      cache_dir: embedding cache folder; ``"default"`` = :func:`default_cache_dir`, ``None`` = memory only.
      data_dir: a data folder in the mirror layout; default: each dataset resolved by :mod:`gecko_jax.datasets`
        (``$GECKO_JAX_DATA``, the cache, a download).
      verbose: print the table.

    Returns:
      ``{"suite", "dims", "task_prompts", "model", "tasks": {name: {dims label: result}}, "table": markdown,
      "seconds"}``.

    Example:
      >>> import gecko_jax as gj  # doctest: +SKIP
      >>> res = gj.eval.run_suite(gj.Embedder.from_pretrained("all-MiniLM-L6-v2"), "small", dims=[None, 256])
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    names = list(tasks) if tasks else list(SUITES[suite])
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    dims_list = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    root = data_root(data_dir)
    cache = EmbeddingCache(default_cache_dir() if cache_dir == "default" else cache_dir)
    full_dim = getattr(embedder, "dim", None)
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    for name in names:
        task = TASKS[name]
        t0 = time.perf_counter()
        res = task.run(embedder, dims_list, _task_string(task, task_prompts), cache, root)
        elapsed = time.perf_counter() - t0
        results[name] = {_dims_label(d, full_dim): {**res[d], "task_seconds": elapsed} for d in dims_list}
        if verbose:
            scores = ", ".join(f"{k}: {v['main_score']:.2f}" for k, v in results[name].items())
            print(f"[eval] {name:<22} {task.metric:<20} {scores}   ({elapsed:.1f} s)", flush=True)
    total = time.perf_counter() - t_start
    table = format_table(results, dims_list, full_dim)
    out = {
        "suite": suite, "dims": [_dims_label(d, full_dim) for d in dims_list], "task_prompts": task_prompts,
        "model": {"repr": repr(embedder), "fingerprint": model_fingerprint(embedder), "dim": full_dim},
        "tasks": results, "table": table, "seconds": total,
        "cache": {"dir": str(cache.directory) if cache.directory else None, "hits": cache.hits, "misses": cache.misses},
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "licence_note": LICENCE_NOTE,
    }
    if verbose:
        print(table)
        print(f"total {total:.1f} s")
    if out_dir is not None:
        write_results(out, out_dir)
    return out


def format_table(results: dict, dims_list, full_dim) -> str:
    """Markdown table: one row per task, one column per dims value (main score), plus the metric name."""
    labels = [_dims_label(d, full_dim) for d in dims_list]
    head = "| task | metric | " + " | ".join(f"dims {lab}" for lab in labels) + " |"
    sep = "|" + "---|" * (2 + len(labels))
    rows = [head, sep]
    for name, by_dims in results.items():
        t = TASKS.get(name)
        metric = (t.metric + ("" if t.higher_is_better else " (lower is fairer)")) if t else ""
        rows.append(f"| {name} | {metric} | " + " | ".join(_fmt(by_dims[lab]["main_score"]) for lab in labels) + " |")
    return "\n".join(rows)


def _fmt(v: float) -> str:
    # Fairness gaps live in [0, 1]; two decimals would hide their changes.
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"


def write_results(out: dict, out_dir) -> pathlib.Path:
    """Write ``results.json`` (everything) and ``results.md`` (table + settings + licence note)."""
    from gecko_jax.fileio import write_json, write_text

    out_dir = pathlib.Path(out_dir)
    write_json(out_dir / "results.json", out, indent=2, default=str)  # atomic, as every gecko_jax output
    md = [f"# gecko-jax eval: suite `{out['suite']}`", "", f"Model: `{out['model']['repr']}`  ",
          f"Task prompts: `{out['task_prompts']}`; total time {out['seconds']:.1f} s; {out['date']}", "",
          out["table"], "", f"_{out['licence_note']}_", ""]
    write_text(out_dir / "results.md", "\n".join(md))
    return out_dir
