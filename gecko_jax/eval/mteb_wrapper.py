"""A thin adapter so the ``mteb`` package (2.x, and 1.x calls) can evaluate a gecko_jax embedder.

mteb 2.x (the ``[mteb]`` extra; mteb needs PyTorch, gecko_jax does not) calls
``model.encode(inputs: DataLoader, *, task_metadata, hf_split, hf_subset, prompt_type)`` where each batch is a dict
with ``"text"`` (and, for retrieval corpora, ``"title"``/``"body"``), reads ``model.mteb_model_meta`` (a
``ModelMeta``) and ``model.similarity`` / ``similarity_pairwise``. mteb 1.x called ``encode(sentences,
task_name=..., prompt_type=...)`` with a list of strings or ``{"title", "text"}`` dicts; both are accepted.

With ``task_prompts="gecko"`` the Gecko task string of PAPERS.md 1.4 (Gecko Table 9) is chosen from the task's name
(2.x: ``task_metadata.name``), else from its type (``task_metadata.type``); classification, clustering, STS and
pair-classification tasks (and QuoraRetrieval) use Gecko's symmetric format.

Example::

    import mteb, gecko_jax as gj
    model = gj.eval.MTEBModel(gj.Embedder.from_pretrained("all-MiniLM-L6-v2"))
    mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))
    mteb.evaluate(model, [gj.eval.mteb_wrapper.local_retrieval_task(gj.datasets.path("scifact"))])  # no Hub access
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
      task_prompts: ``None`` (raw text) or ``"gecko"`` (Gecko task strings by task name / type).
      dims: Matryoshka width passed to ``encode`` (``None`` = full).
      batch_size: default ``encode`` batch size.
      name: ``org/name`` reported to mteb (results folders, caches); default ``gecko-jax/<model folder name>``.
      revision: the revision reported to mteb; default a fingerprint of the weights.
    """

    def __init__(self, embedder, *, task_prompts: str | None = None, dims: int | None = None,
                 batch_size: int | None = None, name: str | None = None, revision: str | None = None):
        if task_prompts not in (None, "gecko"):
            raise ValueError(f"task_prompts must be None or 'gecko', got {task_prompts!r}")
        self.embedder = embedder
        self.task_prompts = task_prompts
        self.dims = dims
        self.batch_size = batch_size
        source = getattr(getattr(embedder, "config", None), "name_or_path", None)
        base = str(source).rstrip("/").rsplit("/", 1)[-1] if source else type(embedder).__name__
        suffix = "" if task_prompts is None else "-gecko-prompts"
        suffix += "" if dims is None else f"-{dims}d"
        self.model_name = name or f"gecko-jax/{base}{suffix}"
        self.revision = revision
        self._meta = None

    # ---- mteb 2.x ---------------------------------------------------------------------------------------------
    @property
    def mteb_model_meta(self):
        """The ``mteb.models.ModelMeta`` mteb 2.x reads (built on first use; needs mteb)."""
        if self._meta is None:
            try:
                from mteb.models.model_meta import ModelMeta
            except ImportError:  # no mteb 2.x: hasattr() is False, as mteb 1.x expects
                raise AttributeError("mteb_model_meta needs mteb>=2 (pip install 'gecko-jax[mteb]')") from None
            dim = self.dims or getattr(self.embedder, "dim", None)
            params = getattr(self.embedder, "params", None)
            n_params = None
            if params is not None:
                import jax

                n_params = int(sum(getattr(x, "size", 0) for x in jax.tree_util.tree_leaves(params)))
            revision = self.revision
            if revision is None:
                from gecko_jax.eval.cache import model_fingerprint

                revision = model_fingerprint(self.embedder)[:12] if params is not None else "unknown"
            self._meta = ModelMeta(
                loader=None, name=self.model_name, revision=revision, release_date=None, languages=None,
                n_parameters=n_params, memory_usage_mb=None, max_tokens=getattr(self.embedder, "max_length", None),
                embed_dim=dim, license=None, open_weights=None, public_training_code=None,
                public_training_data=None, framework=["JAX", "safetensors"], similarity_fn_name="cosine",
                use_instructions=self.task_prompts is not None, training_datasets=None)
        return self._meta

    def similarity(self, embeddings1, embeddings2):
        from mteb.similarity_functions import cos_sim

        return cos_sim(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2):
        from mteb.similarity_functions import pairwise_cos_sim

        return pairwise_cos_sim(embeddings1, embeddings2)

    # ---- formatting -------------------------------------------------------------------------------------------
    def task_format(self, task_name: str | None, prompt_type=None, task_type: str | None = None) -> dict:
        """The ``encode`` keyword arguments (task, kind, symmetric) for one mteb call."""
        kind = "document" if str(getattr(prompt_type, "value", prompt_type)) in ("passage", "document") else "query"
        if self.task_prompts is None:
            return {"task": None, "kind": kind, "symmetric": False}
        task = GECKO_TASKS_BY_NAME.get(task_name or "")
        ttype = task_type or (None if task_name in GECKO_TASKS_BY_NAME else _task_type(task_name))
        if task is None:
            task = GECKO_TASKS_BY_TYPE.get(ttype or "")
            if task is None:
                log.warning("no Gecko task string for mteb task %r; encoding without a task prefix", task_name)
        symmetric = task is not None and (task_name in SYMMETRIC_NAMES or ttype in SYMMETRIC_TYPES)
        return {"task": task, "kind": kind, "symmetric": symmetric}

    def encode(self, inputs, task_name: str | None = None, prompt_type=None, *, task_metadata=None,
               hf_split: str | None = None, hf_subset: str | None = None, **kwargs) -> np.ndarray:
        """Embed mteb 2.x batches (a DataLoader of ``{"text", ["title", "body"]}`` dicts) or a 1.x list (strings,
        or ``{"title", "text"}`` dicts for corpora) -> ``np.float32 [n, d]``."""
        task_type = None
        if task_metadata is not None:
            task_name = getattr(task_metadata, "name", task_name)
            task_type = getattr(task_metadata, "type", None)
        texts, titles = _texts_and_titles(inputs)
        if titles is not None and prompt_type is None:
            prompt_type = "passage"
        fmt = self.task_format(task_name, prompt_type, task_type)
        batch_size = kwargs.get("batch_size") or self.batch_size
        if titles is not None and fmt["kind"] != "document":  # a corpus encoded as queries: title + text, as mteb
            texts = [f"{t} {x}".strip() if t else x for t, x in zip(titles, texts)]
        out = self.embedder.encode(texts, titles=titles if fmt["kind"] == "document" else None, dims=self.dims,
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


def _texts_and_titles(inputs) -> tuple[list[str], list | None]:
    """Texts (and titles for corpora, else None) from a 1.x list or the 2.x DataLoader of dict batches."""
    if isinstance(inputs, (list, tuple)):
        items = list(inputs)
        if items and isinstance(items[0], dict):  # 1.x corpus dicts
            return [s.get("text", "") for s in items], [s.get("title") or None for s in items]
        return [str(s) for s in items], None
    texts, titles, has_body = [], [], True
    for batch in inputs:
        if not isinstance(batch, dict) or "text" not in batch:
            raise TypeError(f"mteb inputs: expected batches of dicts with a 'text' list, got {type(batch).__name__}")
        n = len(batch["text"])
        body, title = batch.get("body"), batch.get("title")
        if body is not None and len(body) == n:
            texts.extend(str(b) for b in body)
            titles.extend((str(t) or None) if t is not None else None for t in (title or [None] * n))
        else:
            has_body = False
            texts.extend(str(t) for t in batch["text"])
            titles.extend([None] * n)
    return texts, (titles if has_body and texts else None)


def local_retrieval_task(folder, *, split: str = "test", name: str = "SciFactLocal"):
    """An mteb 2.x retrieval task over a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``)
    that needs no Hub access, e.g. ``local_retrieval_task(gecko_jax.datasets.path("scifact"))``.

    The task is named ``name`` with main score nDCG@10; mteb scores it with its own retrieval evaluator.
    """
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    from gecko_jax.eval.beir import load_beir

    data = load_beir(folder, split=split)
    corpus = Dataset.from_list([{"id": d, "title": v["title"], "text": v["text"]} for d, v in data.corpus.items()])
    queries = Dataset.from_list([{"id": q, "text": t} for q, t in data.queries.items()])
    split_data = RetrievalSplitData(corpus=corpus, queries=queries, relevant_docs=data.qrels, top_ranked=None)

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name, type="Retrieval", main_score="ndcg_at_10", description=f"BEIR folder {folder}, {split} qrels",
            reference=None, dataset={"path": str(folder), "revision": data.fingerprint[:12]}, category="t2t",
            eval_splits=[split], eval_langs=["eng-Latn"], date=None, dialect=[], domains=[], task_subtypes=[],
            license=None, annotations_creators=None, modalities=["text"], sample_creation=None, bibtex_citation="")

        def load_data(self, num_proc=None, **kwargs):
            self.dataset = {"default": {split: split_data}}
            self.data_loaded = True

    return LocalRetrieval()
