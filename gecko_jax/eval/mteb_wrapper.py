"""A thin adapter so the ``mteb`` package can evaluate a gecko_jax embedder (users with network access).

``mteb`` (1.x) calls ``model.encode(sentences, task_name=..., prompt_type=PromptType.query|passage|None, **kw)`` and
expects an ``[n, d]`` array. Retrieval corpora arrive either as strings (mteb joins ``title + " " + text``) or as
dicts ``{"title", "text"}``; both are accepted. Nothing here imports ``mteb``.

With ``task_prompts="gecko"`` the Gecko task string of PAPERS.md 1.4 (Gecko Table 9) is prefixed by ``task_name``;
classification, clustering, STS and pair-classification tasks (and QuoraRetrieval) use Gecko's symmetric format.
Task names not in the table fall back to the task type when ``mteb`` is importable, else to no prefix.

Example::

    import mteb, gecko_jax as gj
    model = gj.eval.MTEBModel(gj.Embedder.from_pretrained("all-MiniLM-L6-v2"))
    mteb.MTEB(tasks=mteb.get_tasks(tasks=["SciFact"])).run(model)
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Gecko Table 9 (PAPERS.md 1.4): dataset -> task string.
GECKO_TASKS_BY_NAME = {
    **{n: "fact checking" for n in ("NFCorpus", "SciFact")},
    **{n: "question answering" for n in ("NQ", "MSMARCO", "FiQA2018", "DBPedia", "SCIDOCS", "Touche2020",
                                          "CQADupstackRetrieval", "AskUbuntuDupQuestions", "SciDocsRR")},
    **{n: "search result" for n in ("ClimateFEVER", "FEVER", "HotpotQA", "QuoraRetrieval", "TRECCOVID", "SummEval",
                                     "StackOverflowDupQuestions")},
    **{n: "semantic similarity" for n in ("MindSmallReranking", "ArguAna", "STSBenchmark", "BIOSSES", "SICK-R",
                                           "STS12", "STS13", "STS14", "STS15", "STS16", "STS17", "STS22")},
}
GECKO_TASKS_BY_TYPE = {"Classification": "classification", "MultilabelClassification": "classification",
                       "Clustering": "search result", "PairClassification": "semantic similarity",
                       "STS": "semantic similarity", "Summarization": "search result",
                       "Reranking": "question answering", "Retrieval": "question answering"}
SYMMETRIC_TYPES = {"Classification", "MultilabelClassification", "Clustering", "PairClassification", "STS"}
_STS_NAMES = ("STSBenchmark", "BIOSSES", "SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16", "STS17", "STS22")
SYMMETRIC_NAMES = {"QuoraRetrieval", *_STS_NAMES}


def _task_type(task_name: str | None) -> str | None:
    if not task_name:
        return None
    try:
        import mteb
    except ImportError:
        return None
    try:
        return mteb.get_task(task_name).metadata.type
    except Exception:  # unknown name or an mteb API change: fall back to the name table only
        return None


class MTEBModel:
    """``mteb`` encoder protocol around any object with gecko_jax's ``encode`` signature.

    Args:
      embedder: e.g. :class:`gecko_jax.Embedder`.
      task_prompts: ``None`` (raw text) or ``"gecko"`` (Gecko task strings by ``task_name``).
      dims: Matryoshka width passed to ``encode`` (``None`` = full).
      batch_size: default ``encode`` batch size.
    """

    def __init__(self, embedder, *, task_prompts: str | None = None, dims: int | None = None,
                 batch_size: int | None = None):
        if task_prompts not in (None, "gecko"):
            raise ValueError(f"task_prompts must be None or 'gecko', got {task_prompts!r}")
        self.embedder = embedder
        self.task_prompts = task_prompts
        self.dims = dims
        self.batch_size = batch_size
        name = getattr(getattr(embedder, "config", None), "name_or_path", None)
        # mteb reads model_card_data / mteb_model_meta when saving results; a plain name is enough for 1.x.
        self.model_name = name or type(embedder).__name__

    def task_format(self, task_name: str | None, prompt_type=None) -> dict:
        """The ``encode`` keyword arguments (task, kind, symmetric) for one mteb call."""
        kind = "document" if str(getattr(prompt_type, "value", prompt_type)) in ("passage", "document") else "query"
        if self.task_prompts is None:
            return {"task": None, "kind": kind, "symmetric": False}
        task = GECKO_TASKS_BY_NAME.get(task_name or "")
        ttype = None if task_name in GECKO_TASKS_BY_NAME else _task_type(task_name)
        if task is None:
            task = GECKO_TASKS_BY_TYPE.get(ttype or "")
            if task is None:
                log.warning("no Gecko task string for mteb task %r; encoding without a task prefix", task_name)
        symmetric = task is not None and (task_name in SYMMETRIC_NAMES or ttype in SYMMETRIC_TYPES)
        return {"task": task, "kind": kind, "symmetric": symmetric}

    def encode(self, sentences, task_name: str | None = None, prompt_type=None, **kwargs) -> np.ndarray:
        """Embed ``sentences`` (strings, or ``{"title", "text"}`` dicts for corpora) -> ``np.float32 [n, d]``."""
        sentences = list(sentences)
        titles = None
        if sentences and isinstance(sentences[0], dict):
            titles = [s.get("title") or None for s in sentences]
            sentences = [s.get("text", "") for s in sentences]
            if prompt_type is None:
                prompt_type = "passage"
        fmt = self.task_format(task_name, prompt_type)
        batch_size = kwargs.get("batch_size", self.batch_size)
        out = self.embedder.encode(sentences, titles=titles if fmt["kind"] == "document" else None, dims=self.dims,
                                   batch_size=batch_size, **fmt)
        return np.asarray(out, dtype=np.float32)

    # Older mteb / BEIR retrieval paths call these when present.
    def encode_queries(self, queries, **kwargs) -> np.ndarray:
        return self.encode(queries, task_name=kwargs.pop("task_name", None), prompt_type="query", **kwargs)

    def encode_corpus(self, corpus, **kwargs) -> np.ndarray:
        if isinstance(corpus, dict):  # BEIR's column layout {"title": [...], "text": [...]}
            corpus = [{"title": t, "text": x} for t, x in zip(corpus.get("title", [""] * len(corpus["text"])),
                                                            corpus["text"])]
        return self.encode(corpus, task_name=kwargs.pop("task_name", None), prompt_type="passage", **kwargs)
