"""``gecko-data``: build FRet training data and fairness tuples with an LLM (local llama.cpp by default, or any
OpenAI-compatible server). Run ``gecko-data fret --help`` / ``gecko-data augment-fair --help``.

Nothing heavy is imported at module import time: ``llama_cpp`` is imported inside the command that needs it, and the
embedder is injected by the caller of :func:`main` (the ``gecko-data`` command wires in ``gecko_jax``'s, which pulls
in JAX, in the process that embeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import logging
import math
import os
import sys
from importlib import resources
from typing import Any, Mapping

from .errors import (EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_STORAGE, DataGenError,
                     InputError, describe_os_error, one_line, redact)

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
    g.add_argument("--max-connection-failures", type=int, default=4,
                   help="stop when the server cannot be reached this many times in a row (default: 4)")
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


def _llm_spec(args):
    from .specs import LLMSpec
    return LLMSpec.from_args(args, _cache_path(args))


def _make_llm(args):
    return _llm_spec(args).build()


def _concurrency(args) -> int:
    if args.concurrency == "auto":
        return 8 if args.llm == "openai" else 1
    try:
        c = int(args.concurrency)
    except ValueError:
        raise InputError(f"--concurrency: expected a positive integer or 'auto', got {args.concurrency!r}") from None
    if c < 1:
        raise InputError(f"--concurrency: expected >= 1, got {c}")
    return c


def _embedder_spec(args):
    """The ``--embedder`` spec: one the caller of :func:`main` injected under that name, else hash or module:function."""
    from .specs import EmbedderSpec

    injected = args.embedders.get(args.embedder)
    if injected is not None:
        return dataclasses.replace(injected, model=args.embedder_model)
    return EmbedderSpec(args.embedder, args.embedder_model)


def _make_embed_fn(args):
    es = _embedder_spec(args)
    doc_fn, query_fn = es.build()
    return doc_fn, query_fn, es.name


def _usage_report(llm, args) -> dict:
    u = llm.usage.as_dict()
    u["cost_usd"] = round(llm.usage.cost(args.price_in, args.price_out), 6)
    return u


def _cache_path(args) -> str | None:
    return None if args.no_cache else (args.cache or os.path.join(args.workdir, "llm_cache.sqlite"))


def _finish(rep: dict, failed: int, total: int, failures_file) -> int:
    """Print the summary (strict JSON: NaN becomes null) and turn the failure count into the exit code."""
    def strict(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [strict(v) for v in x]
        return x
    print(json.dumps(strict(rep), indent=1, allow_nan=False))
    if failed:
        print(f"gecko-data: finished with {failed} failed record{'s' * (failed != 1)} of {total}, see "
              f"{failures_file}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def _fret_config(args):
    from .stages import FRetConfig
    try:
        return FRetConfig(neighbours=args.neighbours, negative=args.negative,
                          max_passage_chars=args.max_passage_chars, seed=args.seed, concurrency=_concurrency(args),
                          retry_failed=args.retry_failed, progress=not args.no_progress, rc_labels=args.rc_labels,
                          scoring_ql=args.scoring_ql, scoring_rc=args.scoring_rc, fusion=args.fusion,
                          calibration_min_records=args.calibration_min_records,
                          calibration_alpha=args.calibration_alpha, retriever=args.retriever,
                          ann_threshold=args.ann_threshold)
    except ValueError as e:  # "neighbours: expected >= 2 ..." names the option
        raise InputError(f"--{e}") from None


def _cmd_fret(args) -> int:
    from .corpus import corpus_files
    from .files import check_outputs
    from .fret import failures_path, stage_paths

    corpus_spec = args.corpus or _asset(DEMO_CORPUS)
    args.workdir = args.workdir or str(args.out) + ".work"
    remote, remote_work = "://" in str(corpus_spec), "://" in str(args.workdir)
    if (remote or remote_work) and args.engine != "beam":
        raise InputError(f"{'--corpus' if remote else '--workdir'} on a remote filesystem needs --engine beam")
    if remote_work and not (args.cache or args.no_cache):
        raise InputError(f"--workdir {args.workdir}: the LLM cache is a sqlite file; give --cache PATH (a local path "
                         f"on every worker, or a shared mount) or --no-cache")
    q, n, sc = stage_paths(args.workdir) if not remote_work else (None, None, None)
    files = [] if remote else corpus_files(corpus_spec)
    check_outputs([("--out", args.out), ("failures file", failures_path(args.out)), ("stage file", q),
                   ("stage file", n), ("stage file", sc), ("--cache", _cache_path(args))],
                  folders=[("--workdir", None if remote_work else args.workdir)],
                  inputs=[*(("--corpus", f) for f in files), ("--model-path", args.model_path)])
    if args.passages is not None and args.passages < 1:
        raise InputError(f"--passages: expected >= 1, got {args.passages}")
    cfg = _fret_config(args)
    if args.engine == "beam":
        return _fret_beam(args, corpus_spec, cfg)
    if args.beam_args:
        raise InputError(f"pipeline options after '--' ({' '.join(args.beam_args)}) need --engine beam")
    return _fret_local(args, files, cfg)


def _fret_local(args, files, cfg) -> int:
    from .corpus import open_corpus
    from .fret import FRetPipeline, failures_path
    from .stages import sample_seed_ids

    corpus = open_corpus(files)  # validates every line (file:line), keeps offsets, not text
    seeds = sample_seed_ids(iter(corpus), args.passages, seed=args.seed)
    llm = _make_llm(args)  # first: a bad LLM option fails fast, before an encoder is loaded
    embed_fn, query_embed_fn, emb_name = _make_embed_fn(args)
    log.info("fret: %d seed passages of %d, llm=%s model=%s, %d neighbours, negative=%s, concurrency=%d",
             len(seeds), len(corpus), llm.name, llm.model, cfg.neighbours, cfg.negative, cfg.concurrency)
    summary = FRetPipeline(llm, embed_fn, corpus, workdir=args.workdir, config=cfg,
                           embedder_name=emb_name, query_embed_fn=query_embed_fn).run(seeds, args.out)
    rep = dataclasses.asdict(summary)
    rep["usage"] = _usage_report(llm, args)
    rep["out"] = str(args.out)
    rep["failures_file"] = str(failures_path(args.out))
    rep["engine"] = "local"
    return _finish(rep, summary.failures, summary.seeds, rep["failures_file"])


_BEAM_ERRORS = ("FatalLLMError", "CacheError", "StorageError", "JsonlError", "InputError", "OutputPathError")


def _beam_error(e: BaseException):
    """The data_gen error inside a failed Beam pipeline (runners wrap the worker's traceback in their own)."""
    import re

    from . import errors, jsonl, llm as llm_mod
    text = str(e)
    for name in _BEAM_ERRORS:
        m = re.search(rf"\b{name}: ([^\n]+)", text)
        if m:
            cls = getattr(llm_mod, name, None) or getattr(jsonl, name, None) or getattr(errors, name)
            return cls(m.group(1).strip().rstrip("'\"").replace("\\'", "'"))
    return None


def _fret_beam(args, corpus_spec, cfg) -> int:
    try:
        from . import beam_fret
    except ImportError as e:
        raise InputError(f"--engine beam needs Apache Beam: pip install 'gecko-jax[scale]' ({e})") from None
    from .fret import failures_path
    from .scoring import plan_scoring

    files = beam_fret.job_files(str(corpus_spec))
    if "://" not in str(corpus_spec):
        n_passages = beam_fret.validate_local_corpus(files)  # file:line errors before any LLM call
        log.info("fret (beam): %d passages in %d file(s)", n_passages, len(files))
    spec = _llm_spec(args)
    llm = spec.build()
    plan = plan_scoring(llm, rc_labels=cfg.rc_labels, ql=cfg.scoring_ql, rc=cfg.scoring_rc)  # probed once, here
    embedder = _embedder_spec(args)
    workdir = (args.workdir.rstrip("/") + "/beam") if "://" in args.workdir else os.path.join(args.workdir, "beam")
    job = beam_fret.BeamFRetJob(files=files, workdir=workdir, n_seeds=args.passages,
                                llm=spec, embedder=embedder, plan=plan, config=cfg, model=llm.model,
                                backend=llm.name)
    fails = failures_path(args.out)
    try:
        rep = beam_fret.run_beam(job, args.out, fails, args.beam_args)
    except (DataGenError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a worker's error arrives wrapped by the runner
        err = _beam_error(e)
        if err is None:
            raise
        raise err from None
    driver = llm.usage.as_dict()  # the capability probe
    for k, v in driver.items():
        rep["usage"][k] = rep["usage"].get(k, 0) + v
    rep["usage"]["cost_usd"] = round((rep["usage"]["prompt_tokens"] * args.price_in
                                      + rep["usage"]["completion_tokens"] * args.price_out) / 1e6, 6)
    rep["out"] = str(args.out)
    rep["failures_file"] = str(fails)
    return _finish(rep, rep["failures"], rep["seeds"], rep["failures_file"])


def _cmd_fair(args) -> int:
    from .fair import FairAugmenter, fair_side_files, load_texts
    from .files import check_outputs

    input_path = args.input or _asset(DEMO_FAIR)
    args.workdir = args.workdir or str(args.out) + ".work"
    log_path, fail_path = fair_side_files(args.out)
    cache = _cache_path(args) if args.method == "llm" else None
    check_outputs([("--out", args.out), ("failures file", fail_path), ("log file", log_path), ("--cache", cache)],
                  folders=[("--workdir", args.workdir if cache else None)],
                  inputs=[("--input", input_path), ("--model-path", args.model_path)])
    items = load_texts(input_path, text_field=args.text_field, id_field=args.id_field)
    if args.limit is not None:
        if args.limit < 0:
            raise InputError(f"--limit: expected >= 0, got {args.limit}")
        items = items[: args.limit]
    llm = _make_llm(args) if args.method == "llm" else None
    extra = {}
    if llm is not None and args.prompt == "v3":
        # v3: worked examples chosen by gender words, retries; with the embedded model, the other group's words are
        # banned by logit bias (what lifted Gemma 270M from 1/35 to 44/64 valid tuples, experiments/fairness).
        extra = {"prompt": "v3", "attempts": args.attempts}
        if args.llm == "local" and not args.no_ban:
            from .fair import llama_cpp_ban_fn

            extra["ban_tokens"] = llama_cpp_ban_fn(llm)
    try:
        aug = FairAugmenter(llm, concurrency=_concurrency(args), retry_failed=args.retry_failed,
                            progress=not args.no_progress, **extra)
    except ValueError as e:
        raise InputError(f"--{e}") from None
    summary = aug.run(items, args.out)
    rep = dataclasses.asdict(summary)
    if llm is not None:
        rep["usage"] = _usage_report(llm, args)
    rep["out"] = str(args.out)
    rep["failures_file"] = str(fail_path)
    return _finish(rep, summary.failed, summary.inputs, rep["failures_file"])


def build_parser() -> argparse.ArgumentParser:
    fmt = dict(epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap = argparse.ArgumentParser(prog="gecko-data", description=__doc__.split("\n\n")[0], **fmt)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_fret_parser(sub, fmt)
    _add_fair_parser(sub, fmt)
    return ap


def _add_fret_parser(sub, fmt: dict) -> None:
    """``gecko-data fret``: inputs, scale and the LLM's flags."""
    f = sub.add_parser("fret", help="FRet: generate task+query per passage, mine positive and hard negative",
                       description="Few-shot Prompted Retrieval data (Gecko Sec. 3). Output: one JSON line per seed "
                                   "passage with task, query, positive, negative, all ranks/scores and provenance. "
                                   "Re-running continues where a previous run stopped.", **fmt)
    f.add_argument("--corpus", default=None,
                   help="JSONL passages {_id|id, text, title?}: a file, a folder of *.jsonl shards or a glob "
                        "(default: the bundled 250-passage SciFact demo)")
    f.add_argument("--out", required=True, help="output JSONL")
    f.add_argument("--passages", type=int, default=None, help="number of seed passages, sampled (default: all)")
    f.add_argument("--neighbours", type=int, default=20, help="candidates per query, N (default: 20)")
    f.add_argument("--negative", choices=("lowest", "random"), default="lowest",
                   help="hard negative: the lowest-ranked candidate or a random one (default: lowest)")
    f.add_argument("--max-passage-chars", type=int, default=1000, help="passage length inside prompts (default 1000)")
    f.add_argument("--seed", type=int, default=0, help="seed sampling and random negatives (default: 0)")
    f.add_argument("--embedder", default="gecko",
                   help="gecko (gecko_jax.Embedder, default; provided by the gecko-data command), hash (bag of "
                        "words, no model) or module:function (an importable texts -> [n, d] function)")
    f.add_argument("--embedder-model", default="all-MiniLM-L6-v2", help="model for --embedder gecko")
    e = f.add_argument_group("scale")
    e.add_argument("--engine", choices=("local", "beam"), default="local",
                   help="local: one process, resumable stage files (default); beam: Apache Beam (pip install "
                        "'gecko-jax[scale]'), options for the runner after '--', e.g. -- --runner DirectRunner "
                        "--direct_running_mode multi_processing --direct_num_workers 4")
    e.add_argument("--retriever", default="auto", choices=("auto", "exact", "faiss-hnsw", "faiss-ivf", "scann"),
                   help="nearest-neighbour search: exact (the reference), an ANN index (saved in the workdir and "
                        "reused), or auto = exact up to --ann-threshold passages, FAISS HNSW above (default: auto)")
    e.add_argument("--ann-threshold", type=int, default=200_000, help="corpus size above which auto uses ANN")
    _add_scoring_args(f.add_argument_group("scoring and labels"))
    _add_llm_args(f)
    f.set_defaults(func=_cmd_fret)


def _add_scoring_args(g2) -> None:
    """``gecko-data fret``'s scoring routes, rank fusion and calibration."""
    g2.add_argument("--rc-labels", choices=("binary", "graded"), default="binary",
                    help="relevance classification: binary = log P(Yes) (default), graded = expected relevance over "
                         "0-3 labels (Zhuang et al. 2023)")
    g2.add_argument("--scoring-ql", default="auto",
                    choices=("auto", "score", "prompt_logprobs", "prompt_logprobs_chat", "none"),
                    help="query-likelihood route: auto probes the server once (completions echo log-probs, then "
                         "vLLM prompt_logprobs; none = rank by RC alone, 'rc_only')")
    g2.add_argument("--scoring-rc", default="auto", choices=("auto", "score", "chat_logprobs"),
                    help="relevance-classification route: auto = completions when offered, else the chat answer's "
                         "top_logprobs")
    g2.add_argument("--fusion", choices=("rrf", "drop", "weighted"), default="drop",
                    help="how QL and RC ranks are fused: rrf = equal votes (the paper); drop = drop a scorer whose "
                         "seed recall@1 on this run is not above chance (default); weighted = weights by lift over "
                         "chance. Recorded in every record's 'fusion'")
    g2.add_argument("--calibration-min-records", type=int, default=50,
                    help="fewer scored records: no calibration, the paper's RRF (default: 50)")
    g2.add_argument("--calibration-alpha", type=float, default=0.01,
                    help="significance level of the seed-recall@1 test against chance (default: 0.01)")


def _add_fair_parser(sub, fmt: dict) -> None:
    """``gecko-data augment-fair``."""
    a = sub.add_parser("augment-fair", help="rewrite texts into male / female / neutral versions",
                       description="Content-matched gender tuples {id, neutral, groups: {male, female}, source} for "
                                   "content-conditional debiasing. Invalid rewrites go to <out>.failures.jsonl.",
                       **fmt)
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


class _RedactFilter(logging.Filter):
    """Last line of defence: no log line shows the API key (or a bearer token / ``key=`` parameter)."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), None
        return True


def main(argv: list[str] | None = None, *, embedders: Mapping[str, Any] | None = None) -> int:
    """Run ``gecko-data``; returns the exit code (see ``--help``). Expected failures print one line to stderr.

    ``embedders``: ``--embedder`` names the caller provides, each an :class:`~data_gen.specs.EmbedderSpec` with a
    ``factory`` (the ``gecko-data`` command, :mod:`gecko_jax.cli.gecko_data`, injects ``gecko``). data_gen imports no
    embedder package itself.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:  # pipeline options for --engine beam
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)  # a usage error exits with 2 (= EXIT_INPUT), like argparse always does
    args.beam_args = beam_args
    args.embedders = dict(embedders or {})
    secrets = [os.environ.get(args.api_key_env)] if getattr(args, "api_key_env", None) else []
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:
        h.addFilter(_RedactFilter(secrets))
    try:
        return args.func(args)
    except DataGenError as e:
        print(f"gecko-data: error: {one_line(redact(str(e), secrets), 1000)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"gecko-data: error: {e.filename or 'a file'}: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt:
        print("gecko-data: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
