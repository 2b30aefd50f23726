"""``gecko-data``: build FRet training data and fairness tuples with an LLM (local llama.cpp by default, or any
OpenAI-compatible server). Run ``gecko-data fret --help`` / ``gecko-data augment-fair --help``.

Nothing heavy is imported at module import time: the embedder (``gecko_jax``, which pulls in JAX) and ``llama_cpp``
are imported inside the command that needs them.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import os
import sys
from importlib import resources

log = logging.getLogger("data_gen")

DEMO_CORPUS = "assets/scifact_demo.jsonl"
DEMO_FAIR = "assets/fair_demo.jsonl"


def _asset(name: str) -> str:
    return str(resources.files("data_gen").joinpath(name))


def _add_llm_args(p: argparse.ArgumentParser, *, default_concurrency: str = "auto") -> None:
    g = p.add_argument_group("LLM")
    g.add_argument("--llm", choices=("local", "openai", "fake"), default="local",
                   help="local: embedded llama.cpp with Gemma 3 270M (no key needed); openai: any OpenAI-compatible "
                        "server (OpenAI, Gemini's compatible endpoint, vLLM, Ollama, llama_cpp.server); fake: a "
                        "deterministic stand-in for tests and demos (default: local)")
    g.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"),
                   help="server URL for --llm openai, e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL)")
    g.add_argument("--model", default=os.environ.get("OPENAI_MODEL"),
                   help="model id for --llm openai (default: $OPENAI_MODEL)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="NAME of the environment variable holding the API key (keys are never taken on the command "
                        "line, logged or cached; default: OPENAI_API_KEY)")
    g.add_argument("--extra-body", default=None,
                   help='JSON merged into every request, e.g. \'{"repeat_penalty": 1.0}\' for llama.cpp servers')
    g.add_argument("--model-path", default=None, help="GGUF file for --llm local (default: the bundled Gemma 3 270M)")
    g.add_argument("--n-ctx", type=int, default=2048, help="context length for --llm local (default: 2048)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for --llm local")
    g.add_argument("--concurrency", default=default_concurrency,
                   help="LLM calls in flight (default: auto = 1 for local/fake, 8 for openai)")
    g.add_argument("--rpm", type=float, default=None, help="requests-per-minute limit (token bucket)")
    g.add_argument("--tpm", type=float, default=None, help="tokens-per-minute limit (token bucket; estimated)")
    g.add_argument("--max-attempts", type=int, default=6, help="attempts per HTTP call, first included (default: 6)")
    g.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout per request in seconds (default: 60)")
    g.add_argument("--backoff-base", type=float, default=0.5, help="backoff base in seconds (default: 0.5)")
    g.add_argument("--cache", default=None, help="sqlite cache of LLM calls (default: <workdir>/llm_cache.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="do not cache LLM calls")
    g.add_argument("--price-in", type=float, default=0.0, help="USD per 1M prompt tokens, for the cost report")
    g.add_argument("--price-out", type=float, default=0.0, help="USD per 1M completion tokens, for the cost report")
    g.add_argument("--retry-failed", action="store_true", help="also redo ids whose output failed to parse/validate")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--workdir", default=None, help="stage files and cache (default: <out>.work)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _make_llm(args):
    from .cache import SqliteCache
    from .limits import RateLimiter
    from .llm import CachedLLM, LlamaCppLLM, OpenAICompatLLM
    from .fake import FakeLLM

    if args.llm == "openai":
        if not args.base_url:
            raise SystemExit("--llm openai needs --base-url (or $OPENAI_BASE_URL)")
        if not args.model:
            raise SystemExit("--llm openai needs --model (or $OPENAI_MODEL)")
        try:
            extra = json.loads(args.extra_body) if args.extra_body else None
        except json.JSONDecodeError as e:
            raise SystemExit(f"--extra-body: expected a JSON object, got {args.extra_body!r} ({e})")
        if extra is not None and not isinstance(extra, dict):
            raise SystemExit(f"--extra-body: expected a JSON object, got {type(extra).__name__}")
        inner = OpenAICompatLLM(args.base_url, args.model, api_key_env=args.api_key_env, timeout=args.timeout,
                                max_attempts=args.max_attempts, backoff_base=args.backoff_base,
                                limiter=RateLimiter(args.rpm, args.tpm), extra_body=extra)
    elif args.llm == "local":
        inner = LlamaCppLLM(args.model_path, n_ctx=args.n_ctx, n_threads=args.threads)
    else:
        inner = FakeLLM()
    cache = None
    if not args.no_cache:
        cache = SqliteCache(args.cache or os.path.join(args.workdir, "llm_cache.sqlite"))
    return CachedLLM(inner, cache)


def _concurrency(args) -> int:
    if args.concurrency == "auto":
        return 8 if args.llm == "openai" else 1
    try:
        c = int(args.concurrency)
    except ValueError:
        raise SystemExit(f"--concurrency: expected a positive integer or 'auto', got {args.concurrency!r}")
    if c < 1:
        raise SystemExit(f"--concurrency: expected >= 1, got {c}")
    return c


def _make_embed_fn(spec: str, model: str):
    if spec == "hash":
        from .retrieval import hashed_bow_embed
        return hashed_bow_embed, None, "hashed-bow-512"
    if spec == "gecko":
        from gecko_jax import Embedder  # JAX is imported here, only when this command runs

        emb = Embedder.from_pretrained(model)
        return (lambda texts: emb.encode(list(texts), kind="document"),
                lambda texts: emb.encode(list(texts), kind="query"), f"gecko_jax:{model}")
    if ":" in spec:
        mod, fn = spec.split(":", 1)
        return getattr(importlib.import_module(mod), fn), None, spec
    raise SystemExit(f"--embedder: expected 'gecko', 'hash' or 'module:function', got {spec!r}")


def _usage_report(llm, args) -> dict:
    u = llm.usage.as_dict()
    u["cost_usd"] = round(llm.usage.cost(args.price_in, args.price_out), 6)
    return u


def _cmd_fret(args) -> int:
    from .fret import FRetConfig, FRetPipeline, choose_seeds, load_corpus

    corpus_path = args.corpus or _asset(DEMO_CORPUS)
    args.workdir = args.workdir or str(args.out) + ".work"
    corpus = load_corpus(corpus_path)
    cfg = FRetConfig(neighbours=args.neighbours, negative=args.negative, max_passage_chars=args.max_passage_chars,
                     seed=args.seed, concurrency=_concurrency(args), retry_failed=args.retry_failed,
                     progress=not args.no_progress)
    seeds = choose_seeds(list(corpus), args.passages, seed=args.seed)
    llm = _make_llm(args)  # first: a bad LLM option fails fast, before an encoder is loaded
    embed_fn, query_embed_fn, emb_name = _make_embed_fn(args.embedder, args.embedder_model)
    log.info("fret: %d seed passages of %d, llm=%s model=%s, %d neighbours, negative=%s, concurrency=%d",
             len(seeds), len(corpus), llm.name, llm.model, cfg.neighbours, cfg.negative, cfg.concurrency)
    summary = FRetPipeline(llm, embed_fn, corpus, workdir=args.workdir, config=cfg,
                           embedder_name=emb_name, query_embed_fn=query_embed_fn).run(seeds, args.out)
    rep = dataclasses.asdict(summary)
    rep["usage"] = _usage_report(llm, args)
    rep["out"] = str(args.out)
    print(json.dumps(rep, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    return 0 if summary.records > 0 else 1


def _cmd_fair(args) -> int:
    from .fair import FairAugmenter, load_texts

    items = load_texts(args.input or _asset(DEMO_FAIR), text_field=args.text_field, id_field=args.id_field)
    if args.limit:
        items = items[: args.limit]
    args.workdir = args.workdir or str(args.out) + ".work"
    llm = _make_llm(args) if args.method == "llm" else None
    extra = {}
    if llm is not None and args.prompt == "v3":
        # v3: worked examples chosen by gender words, retries; with the embedded model, the other group's words are
        # banned by logit bias (what lifted Gemma 270M from 1/35 to 44/64 valid tuples, experiments/fairness).
        extra = {"prompt": "v3", "attempts": args.attempts}
        if args.llm == "local" and not args.no_ban:
            from .fair import llama_cpp_ban_fn

            extra["ban_tokens"] = llama_cpp_ban_fn(llm)
    aug = FairAugmenter(llm, concurrency=_concurrency(args), retry_failed=args.retry_failed,
                        progress=not args.no_progress, **extra)
    summary = aug.run(items, args.out)
    rep = dataclasses.asdict(summary)
    if llm is not None:
        rep["usage"] = _usage_report(llm, args)
    rep["out"] = str(args.out)
    print(json.dumps(rep, indent=1))
    return 0 if summary.ok > 0 else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gecko-data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fret", help="FRet: generate task+query per passage, mine positive and hard negative",
                       description="Few-shot Prompted Retrieval data (Gecko Sec. 3). Output: one JSON line per seed "
                                   "passage with task, query, positive, negative, all ranks/scores and provenance. "
                                   "Re-running continues where a previous run stopped.")
    f.add_argument("--corpus", default=None,
                   help="JSONL passages {_id|id, text, title?} (default: the bundled 250-passage SciFact demo)")
    f.add_argument("--out", required=True, help="output JSONL")
    f.add_argument("--passages", type=int, default=None, help="number of seed passages, sampled (default: all)")
    f.add_argument("--neighbours", type=int, default=20, help="candidates per query, N (default: 20)")
    f.add_argument("--negative", choices=("lowest", "random"), default="lowest",
                   help="hard negative: the lowest-ranked candidate or a random one (default: lowest)")
    f.add_argument("--max-passage-chars", type=int, default=1000, help="passage length inside prompts (default 1000)")
    f.add_argument("--seed", type=int, default=0, help="seed sampling and random negatives (default: 0)")
    f.add_argument("--embedder", default="gecko",
                   help="gecko (gecko_jax.Embedder, default), hash (bag of words, no model) or module:function")
    f.add_argument("--embedder-model", default="all-MiniLM-L6-v2", help="model for --embedder gecko")
    _add_llm_args(f)
    f.set_defaults(func=_cmd_fret)

    a = sub.add_parser("augment-fair", help="rewrite texts into male / female / neutral versions",
                       description="Content-matched gender tuples {id, neutral, groups: {male, female}, source} for "
                                   "content-conditional debiasing. Invalid rewrites go to <out>.failures.jsonl.")
    a.add_argument("--input", default=None, help="JSONL {id, text} or .txt (default: bundled demo sentences)")
    a.add_argument("--out", required=True, help="output JSONL of valid tuples")
    a.add_argument("--method", choices=("llm", "rules"), default="llm",
                   help="llm rewrites, or the rule-based word swapper baseline (default: llm)")
    a.add_argument("--text-field", default="text")
    a.add_argument("--id-field", default="id")
    a.add_argument("--limit", type=int, default=None, help="only the first N texts")
    a.add_argument("--prompt", choices=("v2", "v3"), default="v3",
                   help="rewrite prompt: v3 (few-shot bank + validator + retries; default) or v2 (the first version)")
    a.add_argument("--attempts", type=int, default=2, help="v3: tries per rewrite before it counts as failed")
    a.add_argument("--no-ban", action="store_true",
                   help="v3 with --llm local: do not ban the other group's gender words by logit bias")
    _add_llm_args(a)
    a.set_defaults(func=_cmd_fair)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
