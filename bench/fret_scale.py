"""Benchmark: FRet at corpus scale. Local engine vs Apache Beam (DirectRunner, multi-processing): records/s and peak
RSS; ANN indexes (FAISS HNSW / IVF, ScaNN) against exact search: recall@N, build and query time.

Corpus: ``--passages`` synthetic passages (``data_gen.fake.synthetic_corpus``, 60-100 pseudo-words each, topical
structure), written as ``--shards`` JSONL shards. LLM: ``data_gen.fake.FakeOpenAIServer`` in its own process on
127.0.0.1, ``--slots`` requests served in parallel, each taking ``--latency`` seconds (a hosted API or a vLLM server
with parallel slots). Embeddings: the hashed bag of words (``--embedder hash``, 512-d). Both engines get fresh
caches (every call is paid) and the same total concurrency (local: ``--slots`` threads; Beam: ``--workers`` worker
processes x ``slots / workers`` threads).

Peak RSS: the largest sum over the engine's process tree (driver + Beam workers), sampled every 0.2 s from /proc,
and the largest single process.

Usage (defaults are what BENCHMARKS.md reports)::

    nice -n 5 python bench/fret_scale.py [--passages 100000 --seeds 1000 --neighbours 20 --latency 0.2 --slots 16]
    python bench/fret_scale.py --only ann          # the index comparison alone (reuses --work when present)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor()
        flags = open("/proc/cpuinfo").read()
        isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "SSE"
        return f"{name} ({os.cpu_count()} cores, {isa})"
    except OSError:
        return platform.processor()


def write_corpus(folder: Path, n: int, shards: int) -> None:
    from data_gen.fake import synthetic_corpus
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // shards)
    files = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(shards)]
    for k, p in enumerate(synthetic_corpus(n, seed=0)):
        files[k // per].write(json.dumps({"_id": p.id, "title": p.title, "text": p.text}) + "\n")
    for f in files:
        f.close()
    (folder / "done").write_text(str(n))


def serve(port_file: str, latency: float, slots: int) -> None:
    """Child-process mode: run the fake server until killed, its port written to ``port_file``."""
    from data_gen import FakeOpenAIServer
    srv = FakeOpenAIServer(latency=latency, slots=slots).start()
    Path(port_file).write_text(srv.base_url)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


class TreeRss:
    """Samples the RSS of a process and all its descendants (bytes), keeping the peak sum and the peak single."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.peak_sum = self.peak_one = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @staticmethod
    def _tree(root: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d))
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        while not self._stop.is_set():
            rss = [self._rss(p) for p in self._tree(self.pid)]
            self.peak_sum = max(self.peak_sum, sum(rss))
            self.peak_one = max(self.peak_one, max(rss, default=0))
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._t.join()


def run_engine(name: str, cmd: list[str], env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    rss = TreeRss(p.pid)
    out, err = p.communicate()
    rss.stop()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed ({p.returncode}): {err[-3000:]}")
    rep = json.loads(out)
    return {"engine": name, "records": rep["records"], "failures": rep["failures"], "wall_s": round(wall, 1),
            "records_per_s": round(rep["records"] / wall, 3), "llm_requests": rep["usage"]["requests"],
            "calls_per_s": round(rep["usage"]["requests"] / wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "peak_rss_tree_mib": round(rss.peak_sum / 2**20), "peak_rss_process_mib": round(rss.peak_one / 2**20),
            "retriever": rep.get("retriever"), "fusion": (rep.get("fusion") or {}).get("weights")}


def bench_engines(args, corpus: Path, work: Path, base_url: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENAI_API_KEY="")
    common = ["--corpus", str(corpus), "--passages", str(args.seeds), "--neighbours", str(args.neighbours),
              "--llm", "openai", "--base-url", base_url, "--model", "fake-llm-v1", "--embedder", "hash",
              "--no-progress", "--retriever", "exact", "--timeout", "120"]
    py = [sys.executable, "-W", "ignore", "-m", "data_gen.cli", "fret"]
    results = []
    if "local" in args.engines:
        results.append(run_engine("local", py + ["--out", str(work / "local" / "fret.jsonl"), *common,
                                                 "--concurrency", str(args.slots)], env))
    if "beam" in args.engines:
        per = max(1, args.slots // args.workers)
        results.append(run_engine(
            f"beam multi_processing x{args.workers}",
            py + ["--out", str(work / "beam" / "fret.jsonl"), *common, "--concurrency", str(per), "--engine", "beam",
                  "--", "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"], env))
    if len(results) == 2:
        same = (work / "local" / "fret.jsonl").read_bytes() == (work / "beam" / "fret.jsonl").read_bytes()
        for r in results:
            r["identical_outputs"] = same
    return results


def bench_ann(args, work: Path) -> list[dict]:
    """Every index over the local run's document vectors, queried with its generated queries."""
    from data_gen.ann import AnnParams, open_retriever
    from data_gen.jsonl import read_jsonl
    from data_gen.retrieval import VectorShards, hashed_bow_embed

    lw = work / "local" / "fret.jsonl.work"
    folders = sorted(lw.glob("vectors-*"))
    if not folders:
        raise SystemExit(f"no document vectors under {lw}: run the engines first")
    vs = VectorShards(folders[0])
    qs = [r for r in read_jsonl(lw / "queries.jsonl") if r.get("ok")][: args.ann_queries]
    qv = hashed_bow_embed([f"task: {q['task']} | query: {q['query']}" for q in qs])
    k = args.neighbours
    t0 = time.perf_counter()
    exact = open_retriever(vs, "exact")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ei, es = exact.search(qv, k)
    exact_q = (time.perf_counter() - t0) / len(qv)
    out = [{"index": "exact (float64 blocked top-k)", "build_s": round(load_s, 1), "query_ms": round(exact_q * 1e3, 2),
            f"recall@{k}": 1.0, "size_mib": round(vs.meta()["rows"] * vs.meta()["dim"] * 4 / 2**20)}]
    configs = [("faiss-hnsw", AnnParams(threads=2, hnsw_ef_search=ef)) for ef in (128, 256, 512)]
    configs += [("faiss-ivf", AnnParams(threads=2, ivf_nprobe=p)) for p in (32, 128)]
    configs += [("scann", AnnParams(scann_leaves_to_search=s)) for s in (100, 300)]
    for kind, params in configs:
        from data_gen.ann import index_path
        path = index_path(vs, kind, params)
        existed = path.exists()
        t0 = time.perf_counter()
        r = open_retriever(vs, kind, params=params)
        build = time.perf_counter() - t0
        r.search(qv[:10], k)
        t0 = time.perf_counter()
        ai, as_ = r.search(qv, k)
        q = (time.perf_counter() - t0) / len(qv)
        rec = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ai, ei)]))
        size = (sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size) / 2**20
        out.append({"index": r.name, "build_s": f"(loaded in {build:.1f})" if existed else round(build, 1),
                    "query_ms": round(q * 1e3, 3), f"recall@{k}": round(rec, 4), "size_mib": round(size)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--neighbours", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="local,beam")
    ap.add_argument("--ann-queries", type=int, default=1000)
    ap.add_argument("--only", choices=("engines", "ann"), default=None)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve, args.latency, args.slots)
    work = Path(args.work or tempfile.mkdtemp(prefix="fret-scale-"))
    load = os.getloadavg()
    print(f"CPU: {cpu_name()}; load average at start {load[0]:.1f}; work folder {work}", flush=True)
    corpus = work / "corpus"
    t0 = time.perf_counter()
    write_corpus(corpus, args.passages, args.shards)
    print(f"corpus: {args.passages} synthetic passages in {args.shards} shards ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    results: dict = {"cpu": cpu_name(), "load_start": round(load[0], 1), "passages": args.passages,
                     "seeds": args.seeds, "neighbours": args.neighbours, "latency_s": args.latency,
                     "slots": args.slots}
    if args.only != "ann":
        port_file = work / "server.url"
        port_file.unlink(missing_ok=True)
        srv = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file), "--latency", str(args.latency),
                                "--slots", str(args.slots)], cwd=REPO)
        try:
            while not port_file.exists():
                time.sleep(0.05)
            results["engines"] = bench_engines(args, corpus / "part-*.jsonl", work, port_file.read_text())
        finally:
            srv.terminate()
            srv.wait()
        ideal = args.slots / args.latency / (1 + 2 * args.neighbours)
        results["ideal_records_per_s"] = round(ideal, 3)
        for r in results["engines"]:
            print(json.dumps(r), flush=True)
        print(f"ideal (server-bound): {ideal:.3f} records/s = {args.slots} slots / {args.latency} s / "
              f"{1 + 2 * args.neighbours} calls", flush=True)
    if args.only != "engines":
        results["ann"] = bench_ann(args, work)
    results["load_end"] = round(os.getloadavg()[0], 1)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
