"""gecko_jax.datasets: the resolution order, and downloads from a real HTTP server on 127.0.0.1 serving the upstream
layouts (a BEIR-style zip built from the local SciFact copy; a Hub-like dataset repository through HF_ENDPOINT):
download, checksum failure, interrupted download resumed, offline error, cache hit with no request.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from gecko_jax import datasets
from gecko_jax.datasets import _fetch
from gecko_jax.eval.readers import load
from tests.conftest import REPO
from tests.local_http import LocalServer

SCIFACT_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache, no mirror, downloads allowed (tests elsewhere run offline)."""
    monkeypatch.setenv("GECKO_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GECKO_JAX_DATA", raising=False)
    monkeypatch.delenv("GECKO_JAX_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return tmp_path


@pytest.fixture(scope="module")
def beir_zip(shared_data) -> bytes:
    """scifact.zip as BEIR ships it (``scifact/...`` members), built from the local copy."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in SCIFACT_FILES:
            z.write(shared_data / "scifact" / f, f"scifact/{f}")
    return buf.getvalue()


def _point_scifact_at(monkeypatch, url: str, data: bytes, *, sha256: str | None = "auto", md5: str | None = None):
    ds = datasets.DATASETS["scifact"]
    src = ds.sources[0]
    remote = dataclasses.replace(src.files[0], url=url, size=len(data), md5=md5,
                                 sha256=hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256)
    monkeypatch.setitem(datasets.DATASETS, "scifact",
                        dataclasses.replace(ds, sources=(dataclasses.replace(src, files=(remote,)),) + ds.sources[1:]))


def _same_files(a: pathlib.Path, b: pathlib.Path, files=SCIFACT_FILES) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# ---- resolution order -------------------------------------------------------------------------------------------

def test_resolution_order_explicit_mirror_cache_missing(env, shared_data, monkeypatch):
    assert datasets.where("stsb").kind == "missing"
    monkeypatch.setenv("GECKO_JAX_DATA", str(shared_data))
    res = datasets.where("stsb")
    assert (res.kind, res.path) == ("mirror", shared_data / "stsb")
    assert datasets.where("sst2_senteval").path == shared_data / "sst2_senteval"   # folder names work too
    other = env / "elsewhere"
    assert datasets.where("stsb", other) == datasets.Resolution("stsb", "explicit", other / "stsb")
    # an explicit folder is final: no fallback to the mirror, and the error names the file it expected
    with pytest.raises(datasets.DatasetNotAvailable, match=str(other / "stsb" / "sts-train.csv")):
        datasets.path("stsb", other)
    assert datasets.DataRoot() / "stsb" == shared_data / "stsb"
    assert datasets.DataRoot(shared_data) / "stsb" / "sts-test.csv" == shared_data / "stsb" / "sts-test.csv"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        datasets.where("nope")


def test_offline_error_names_what_to_fetch_and_where(env, monkeypatch):
    monkeypatch.setenv("GECKO_JAX_OFFLINE", "1")
    with pytest.raises(datasets.DatasetNotAvailable) as e:
        datasets.path("banking77")
    msg = str(e.value)
    assert "gecko-jax datasets fetch banking77" in msg and "GECKO_JAX_OFFLINE=1" in msg
    assert str(env / "cache" / "datasets" / "banking77") in msg and "train.csv" in msg and "GECKO_JAX_DATA" in msg
    assert not (env / "cache" / "datasets" / "banking77").exists()


def test_every_entry_is_complete_and_mirror_matches_layout(shared_data):
    for ds in datasets.DATASETS.values():
        assert ds.licence and ds.sources and ds.files, ds.name
        for src in ds.sources:
            assert src.kind in ("url", "hub") and src.files, (ds.name, src.id)
            assert all(r.sha256 is None or len(r.sha256) == 64 for r in src.files)
        if (shared_data / ds.folder).is_dir():  # the mirror holds every file the registry says a folder needs
            missing = [f for f in ds.files if not (shared_data / ds.folder / f).is_file()]
            assert not missing, (ds.name, missing)


# ---- downloads from 127.0.0.1 -----------------------------------------------------------------------------------

def test_beir_zip_download_verifies_and_then_hits_the_cache(env, beir_zip, shared_data, monkeypatch):
    with LocalServer() as srv:
        srv.files["/beir/scifact.zip"] = beir_zip
        _point_scifact_at(monkeypatch, srv.url + "/beir/scifact.zip", beir_zip,
                          md5=hashlib.md5(beir_zip).hexdigest())
        folder = datasets.path("scifact", progress=False)
        assert folder == env / "cache" / "datasets" / "scifact"
        assert _same_files(folder, shared_data / "scifact")
        manifest = json.loads((folder / datasets.MANIFEST).read_text())
        assert manifest["downloads"] == {srv.url + "/beir/scifact.zip": hashlib.sha256(beir_zip).hexdigest()}
        assert not list((folder.parent / ".downloads" / "scifact").glob("*.zip*"))   # archive removed once unpacked
        n = len(srv.log)
        assert datasets.where("scifact").kind == "cache"
        assert load("scifact").queries                                               # the reader works on it
        datasets.path("scifact")
        datasets.fetch("scifact")
        assert len(srv.log) == n == 1                                                # cache hits: no request


def test_checksum_failure_leaves_nothing(env, beir_zip, monkeypatch):
    with LocalServer() as srv:
        srv.files["/beir/scifact.zip"] = beir_zip
        _point_scifact_at(monkeypatch, srv.url + "/beir/scifact.zip", beir_zip, sha256="0" * 64)
        with pytest.raises(datasets.ChecksumError, match="sha256 .* does not match the expected 0000"):
            datasets.fetch("scifact", progress=False)
    root = env / "cache" / "datasets"
    assert not (root / "scifact").exists()
    assert not [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_md5_and_size_checks(env, beir_zip, monkeypatch):
    with LocalServer() as srv:
        srv.files["/z.zip"] = beir_zip
        _point_scifact_at(monkeypatch, srv.url + "/z.zip", beir_zip, md5="f" * 32)
        with pytest.raises(datasets.ChecksumError, match="md5"):
            datasets.fetch("scifact", progress=False)
        remote = dataclasses.replace(datasets.DATASETS["scifact"].sources[0].files[0], size=len(beir_zip) - 1, md5=None)
        with pytest.raises(datasets.ChecksumError, match=f"got {len(beir_zip)} bytes, expected {len(beir_zip) - 1}"):
            _fetch.http_download(remote, env / "x.zip", progress=False)


def test_dropped_connection_resumes_with_a_range_request(env, beir_zip, shared_data, monkeypatch):
    with LocalServer() as srv:
        srv.files["/beir/scifact.zip"] = beir_zip
        srv.drop_after["/beir/scifact.zip"] = len(beir_zip) // 3
        _point_scifact_at(monkeypatch, srv.url + "/beir/scifact.zip", beir_zip)
        folder = datasets.fetch("scifact", progress=False)
        gets = srv.requests("/beir/")
    assert [r[2] for r in gets] == [None, f"bytes={len(beir_zip) // 3}-"]
    assert _same_files(folder, shared_data / "scifact")


def test_part_file_left_by_a_killed_run_is_continued(env, beir_zip, monkeypatch):
    half = len(beir_zip) // 2
    part = env / "cache" / "datasets" / ".downloads" / "scifact" / "scifact.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(beir_zip[:half])
    with LocalServer() as srv:
        srv.files["/beir/scifact.zip"] = beir_zip
        _point_scifact_at(monkeypatch, srv.url + "/beir/scifact.zip", beir_zip)
        datasets.fetch("scifact", progress=False)
        assert [r[2] for r in srv.requests("/beir/")] == [f"bytes={half}-"]
        # a server that ignores ranges sends the whole file, which replaces the part
        part.write_bytes(beir_zip[:half])
        srv.ignore_range = True
        datasets.fetch("scifact", force=True, progress=False)
    assert (env / "cache" / "datasets" / "scifact" / "corpus.jsonl").is_file() and not part.exists()


def test_recorded_digest_catches_a_changed_upstream_file(env, tmp_path, monkeypatch):
    """Unpinned files are checked against the digest recorded at their first download."""
    ds = datasets.DATASETS["crows_pairs"]
    with LocalServer() as srv:
        srv.files["/crows.csv"] = b"sent_more,sent_less\na,b\n"
        remote = dataclasses.replace(ds.sources[0].files[0], url=srv.url + "/crows.csv")
        monkeypatch.setitem(datasets.DATASETS, "crows_pairs", dataclasses.replace(
            ds, sources=(dataclasses.replace(ds.sources[0], files=(remote,)),)))
        datasets.fetch("crows_pairs", progress=False)
        srv.files["/crows.csv"] = b"sent_more,sent_less\nchanged,b\n"
        with pytest.raises(datasets.ChecksumError, match="recorded at the first download"):
            datasets.fetch("crows_pairs", force=True, progress=False)


def test_cli_list_and_fetch(env, beir_zip, monkeypatch, capsys):
    from gecko_jax.cli import main

    with LocalServer() as srv:
        srv.files["/beir/scifact.zip"] = beir_zip
        _point_scifact_at(monkeypatch, srv.url + "/beir/scifact.zip", beir_zip)
        assert main(["datasets", "fetch", "scifact", "--no-progress"]) == 0
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| scifact"))
    assert "CC BY-NC 2.0" in row and "cache: " in row and "pinned sha256" in row
    assert main(["datasets", "fetch", "nope"]) == 2


def test_snli_conversion_matches_senteval_layout(tmp_path, shared_data):
    head = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\n"
    rows = ["neutral\t( ( Two women ) ( ( are ( embracing ( while ( holding ( to ( go packages ) ) ) ) ) ) . ) )\t"
            "( ( The sisters ) ( ( are ( ( hugging goodbye ) ( while ( holding ( to ( ( go packages ) ( after "
            "( just ( eating lunch ) ) ) ) ) ) ) ) ) . ) )\tx\n",
            "-\t( a b )\t( c d )\tx\n"]
    for part in ("dev", "test"):
        (tmp_path / f"snli_1.0_{part}.txt").write_text(head + "".join(rows))
    _fetch.convert_snli_senteval(tmp_path)
    mirror = (shared_data / "snli_senteval" / "s1.dev").read_text().splitlines()[0]
    assert (tmp_path / "s1.dev").read_text().splitlines() == [mirror]          # same tokens, same trailing space
    assert (tmp_path / "labels.test").read_text().split() == ["neutral"]        # no-gold pairs dropped
    (tmp_path / "snli_1.0_dev.txt").write_text("gold_label\tother\n")
    with pytest.raises(datasets.ChecksumError, match="snli_1.0_dev.txt:1: expected columns"):
        _fetch.convert_snli_senteval(tmp_path)


# ---- a Hub dataset repository through HF_ENDPOINT ---------------------------------------------------------------

def _run(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GECKO_JAX_DATA", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(env_extra, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(REPO))


def test_hub_dataset_repo_through_hf_endpoint(tmp_path, shared_data):
    """huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when imported, so each step runs in its own process, as a
    user's would."""
    code = ("import sys; from gecko_jax import datasets; "
            "print(datasets.fetch('scifact', source='hub', progress=False) if sys.argv[-1] == 'fetch' "
            "else datasets.path('scifact'))")
    files = {f: (shared_data / "scifact" / f).read_bytes() for f in SCIFACT_FILES}
    with LocalServer() as srv:
        srv.repos[("datasets", "mteb/scifact")] = files
        env = {"HF_ENDPOINT": srv.url, "HF_HOME": str(tmp_path / "hf"), "GECKO_JAX_CACHE": str(tmp_path / "cache")}
        first = _run(code.replace("sys.argv[-1] == 'fetch'", "True"), env)
        assert first.returncode == 0, first.stderr[-3000:]
        folder = pathlib.Path(first.stdout.strip().splitlines()[-1])
        assert _same_files(folder, shared_data / "scifact")
        resolves = [r for r in srv.requests() if "/resolve/" in r[1]]
        assert {r[1].rsplit("/", 1)[-1] for r in resolves} >= {"corpus.jsonl", "queries.jsonl", "test.tsv"}
        assert all("0228b52cf27578f30900b9e5271d331663a030d7" in r[1] for r in resolves)   # the pinned revision
        n = len(srv.requests())
        again = _run(code.replace("sys.argv[-1] == 'fetch'", "False"), dict(env, HF_HUB_OFFLINE="1"))
        assert again.returncode == 0 and pathlib.Path(again.stdout.strip()) == folder, again.stderr[-2000:]
        assert len(srv.requests()) == n                                    # cache hit: no request
        srv.repos.clear()                                                  # a repo the Hub does not have
        missing = _run(code.replace("sys.argv[-1] == 'fetch'", "True"),
                       dict(env, GECKO_JAX_CACHE=str(tmp_path / "cache2"), HF_HOME=str(tmp_path / "hf2")))
        assert missing.returncode != 0 and "mteb/scifact" in missing.stderr
