"""The Apache Beam engine writes what the local engine writes; a re-run after a kill asks the LLM nothing it answered."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("apache_beam")

from data_gen import (CachedLLM, FakeLLM, FakeOpenAIServer, FRetConfig, FRetPipeline, SqliteCache,  # noqa: E402
                      hashed_bow_embed, load_corpus, sample_seed_ids)
from data_gen.beam_fret import BeamFRetJob, run_beam  # noqa: E402
from data_gen.errors import EXIT_INPUT, EXIT_SERVER  # noqa: E402
from data_gen.llm import FatalLLMError  # noqa: E402
from data_gen.scoring import plan_scoring  # noqa: E402
from data_gen.specs import EmbedderSpec, LLMSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data_gen" / "assets" / "scifact_demo.jsonl"
GARBAGE = 9  # about 1 in 9 generations is unparseable: the dead letter must carry them


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory):
    """The local engine on the whole 250-passage demo (fake LLM with parse failures, exact search)."""
    d = tmp_path_factory.mktemp("local")
    corpus = load_corpus(DEMO)
    cfg = FRetConfig(neighbours=5, progress=False)
    llm = CachedLLM(FakeLLM(garbage_every=GARBAGE), SqliteCache(d / "c.sqlite"))
    seeds = sample_seed_ids(iter(corpus), None)
    s = FRetPipeline(llm, hashed_bow_embed, corpus, workdir=d / "w", config=cfg,
                     embedder_name=EmbedderSpec("hash").name).run(seeds, d / "fret.jsonl")
    assert s.records + s.failures == 250 and s.failures > 0 and s.retriever == "exact"
    return d / "fret.jsonl", cfg, s


def _beam(tmp_path, cfg, beam_args):
    spec = LLMSpec(llm="fake", cache=str(tmp_path / "c.sqlite"), fake_garbage_every=GARBAGE)
    llm = spec.build()
    job = BeamFRetJob(files=[str(DEMO)], workdir=str(tmp_path / "beam"), n_seeds=None, llm=spec,
                      embedder=EmbedderSpec("hash"), plan=plan_scoring(llm), config=cfg, model=llm.model,
                      backend=llm.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BatchElements' timing fit warns on tiny, fast batches
        return run_beam(job, tmp_path / "fret.jsonl", tmp_path / "fret.jsonl.failures.jsonl", beam_args)


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_beam_writes_the_local_records(local_ref, tmp_path, mode):
    out, cfg, s = local_ref
    args = [] if mode == "in_memory" else ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    rep = _beam(tmp_path, cfg, args)
    # Byte-identical output and dead letter (same seeds, same order, same provenance, same fusion weights).
    assert (tmp_path / "fret.jsonl").read_bytes() == out.read_bytes()
    fails = [json.loads(l) for l in open(tmp_path / "fret.jsonl.failures.jsonl")]
    assert (tmp_path / "fret.jsonl.failures.jsonl").read_bytes() == Path(str(out) + ".failures.jsonl").read_bytes()
    assert len(fails) == s.failures and {f["stage"] for f in fails} == {"generate"}
    assert all(f["error_kind"] == "parse" and f["raw"] for f in fails)
    assert rep["records"] == s.records and rep["failures"] == s.failures
    # Every seed was asked exactly once: 1 generation + 2 x 5 scores per parsed seed.
    assert rep["usage"]["requests"] == 250 + 2 * 5 * s.records


def test_seed_sampling_is_the_same_in_both_engines(tmp_path):
    corpus = load_corpus(DEMO)
    seeds = sample_seed_ids(iter(corpus), 7, seed=5)
    FRetPipeline(FakeLLM(), hashed_bow_embed, corpus, workdir=tmp_path / "w", config=FRetConfig(
        neighbours=3, progress=False, seed=5), embedder_name="hashed-bow-512").run(seeds, tmp_path / "l.jsonl")
    spec = LLMSpec(llm="fake", cache=None)
    job = BeamFRetJob(files=[str(DEMO)], workdir=str(tmp_path / "b"), n_seeds=7, llm=spec,
                      embedder=EmbedderSpec("hash"), plan=plan_scoring(spec.build()),
                      config=FRetConfig(neighbours=3, progress=False, seed=5), model="fake-llm-v1", backend="fake")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_beam(job, tmp_path / "b.jsonl", tmp_path / "b.f.jsonl")
    assert [json.loads(l)["id"] for l in open(tmp_path / "b.jsonl")] == seeds
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OPENAI_API_KEY="")


def _cli(srv_url, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-W", "ignore", "-m", "data_gen.cli", "fret", "--out", str(out), "--passages", "30",
            "--neighbours", "5", "--llm", "openai", "--base-url", srv_url, "--model", "fake-llm-v1",
            "--embedder", "hash", "--concurrency", "4", "--no-progress", "--backoff-base", "0.01", "--engine",
            "beam", *extra]


@pytest.mark.slow
def test_beam_rerun_after_kill_repeats_no_finished_call(tmp_path):
    """kill -9 of the whole Beam job (driver and multi-processing workers), re-run: the calls answered before the
    kill come from the shared cache; only those in flight (at most 2 workers x 4) are asked again."""
    mp = ["--", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    with FakeOpenAIServer(latency=0.03, slots=8) as srv:
        p = subprocess.run(_cli(srv.base_url, tmp_path / "ref.jsonl"), capture_output=True, text=True, env=_env(),
                           cwd=REPO, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        ref_attempts = srv.attempts
    assert ref_attempts == 1 + 30 * (1 + 2 * 5)  # the probe, then each call once
    out = tmp_path / "run.jsonl"
    with FakeOpenAIServer(latency=0.03, slots=8) as srv:
        proc = subprocess.Popen(_cli(srv.base_url, out, *mp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=_env(), cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 300
        while srv.attempts < 150 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = srv.attempts
        assert 150 <= killed_at < ref_attempts, "the run finished before it could be killed"
        assert not out.exists()
        p = subprocess.run(_cli(srv.base_url, out, *mp), capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        repeated = sum(c - 1 for c in srv.served.values() if c > 1)
        assert repeated <= 2 * 4
        assert srv.attempts == ref_attempts + repeated
        assert json.loads(p.stdout)["usage"]["cache_hits"] >= killed_at - 2 * 4 - 1
        assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
        # Third run: everything is cached, the probe too.
        p = subprocess.run(_cli(srv.base_url, out), capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=600)
        assert p.returncode == 0 and json.loads(p.stdout)["usage"]["requests"] == 0
        assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()


def test_beam_bad_corpus_line_is_exit_2_before_any_call(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": 5}\n')
    with FakeOpenAIServer() as srv:
        p = subprocess.run(_cli(srv.base_url, tmp_path / "o.jsonl", "--corpus", str(src)), capture_output=True,
                           text=True, env=_env(), cwd=REPO, timeout=300)
        assert srv.attempts == 0
    assert p.returncode == EXIT_INPUT
    assert p.stderr.strip().splitlines()[-1] == (f"gecko-data: error: {src}:2 (id b): field 'text' must be a "
                                                 f"non-empty string, got int 5")


def test_worker_errors_wrapped_by_the_runner_keep_their_exit_code():
    from data_gen.cli import _beam_error
    wrapped = RuntimeError("Pipeline failed: Traceback (most recent call last):\n  File ...\n"
                           "data_gen.llm.FatalLLMError: LLM server http://h/v1 answered HTTP 401 to POST /completions: "
                           "no; check the API key in $OPENAI_API_KEY [while running '1 generate']\n")
    err = _beam_error(wrapped)
    assert isinstance(err, FatalLLMError) and err.exit_code == EXIT_SERVER and "HTTP 401" in str(err)
    assert _beam_error(RuntimeError("something else")) is None


def test_pipeline_options_need_the_beam_engine(tmp_path):
    p = subprocess.run([sys.executable, "-m", "data_gen.cli", "fret", "--out", str(tmp_path / "o.jsonl"), "--llm",
                        "fake", "--embedder", "hash", "--", "--runner", "DirectRunner"], capture_output=True,
                       text=True, env=_env(), cwd=REPO, timeout=120)
    assert p.returncode == EXIT_INPUT and "need --engine beam" in p.stderr
