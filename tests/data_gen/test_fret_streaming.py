"""Memory that does not grow with the corpus: corpora read from disk by offset, stage files indexed by id on disk,
vectors in resumable shards, work streamed through the thread pool."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from data_gen import (CachedLLM, CorpusStore, FakeLLM, FRetConfig, FRetPipeline, JsonlAppender, VectorShards,
                      hashed_bow_embed, load_corpus, open_corpus, sample_seed_ids)
from data_gen.jsonl import JsonlError, JsonlIndex
from data_gen.retrieval import l2_normalize
from data_gen.runner import parallel_map
from data_gen.stages import seed_hash
from tests.conftest import REPO

DEMO = REPO / "data_gen" / "assets" / "scifact_demo.jsonl"


def _shard(tmp_path, n_files=3):
    lines = DEMO.read_text(encoding="utf-8").splitlines(keepends=True)
    folder = tmp_path / "shards"
    folder.mkdir()
    step = -(-len(lines) // n_files)
    for i in range(n_files):
        (folder / f"part-{i:03d}.jsonl").write_text("".join(lines[i * step:(i + 1) * step]), encoding="utf-8")
    return folder


def test_corpus_store_over_shards_equals_the_file(tmp_path):
    folder = _shard(tmp_path)
    ref = load_corpus(DEMO)
    for spec in (folder, str(folder / "part-*.jsonl")):
        store = open_corpus(spec)
        assert len(store) == 250 and list(store) == list(ref)
        for j in (0, 83, 84, 249):
            pid = store.id_at(j)
            assert store.position(pid) == j and store[pid] == ref[pid]
        assert "nope" not in store and store.position("nope") == -1
        assert [p.id for p in store.passages()] == list(ref)
    assert load_corpus(folder) == ref


def test_corpus_store_names_duplicates_and_bad_lines(tmp_path):
    folder = _shard(tmp_path, 2)
    first = json.loads((folder / "part-000.jsonl").read_text().splitlines()[4])
    with open(folder / "part-001.jsonl", "a") as f:
        f.write(json.dumps({"_id": first["_id"], "text": "again"}) + "\n")
    n = len((folder / "part-001.jsonl").read_text().splitlines())
    with pytest.raises(JsonlError, match=rf"part-001.jsonl:{n}: duplicate id '{first['_id']}' \(first at "
                                         rf".*part-000.jsonl:5\)"):
        CorpusStore(folder)
    (folder / "part-001.jsonl").write_text('{"_id": "x", "text": ""}\n')
    with pytest.raises(JsonlError, match=r"part-001.jsonl:1 \(id x\): field 'text' is empty"):
        CorpusStore(folder)


def test_jsonl_index_keeps_the_latest_line_per_id(tmp_path):
    p = tmp_path / "s.jsonl"
    with JsonlAppender(p) as w:
        for i in range(50):
            w.append({"id": f"k{i}", "v": i})
        w.append({"id": "k7", "v": 700})
    with open(p, "ab") as f:
        f.write(b'{"id": "k8", "v"')  # torn tail
    ix = JsonlIndex(p, fingerprints={"v": lambda r: r["v"]}, flags=lambda r: r["v"] % 3)
    assert len(ix) == 50 and ix.get("k7") == {"id": "k7", "v": 700} and ix.fingerprint("k7", "v") == 700
    assert ix.get("k8") == {"id": "k8", "v": 8} and ix.flags("k8") == 2 and ix.get("zz") is None
    assert [r["id"] for r in ix.records()][-1] == "k7"  # file order of the latest lines
    assert JsonlIndex(tmp_path / "missing.jsonl").get("a") is None


def test_seed_sampling_streams_and_ignores_order():
    ids = [f"p{i}" for i in range(5000)]
    picked = sample_seed_ids(iter(ids), 40, seed=3)
    want = sorted(ids, key=lambda i: (seed_hash(3, i), i))[:40]
    assert set(picked) == set(want) and picked == [i for i in ids if i in set(want)]
    assert set(sample_seed_ids(reversed(ids), 40, seed=3)) == set(want)
    assert sample_seed_ids(iter(ids[:10]), None) == ids[:10]


def test_vector_shards_resume_after_an_interruption(tmp_path):
    texts = [p.text for p in load_corpus(DEMO).values()]
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed while embedding the 5th batch
        return hashed_bow_embed(batch)
    with pytest.raises(KeyboardInterrupt):
        VectorShards(tmp_path / "v").build(texts, flaky, batch_size=16, shard_rows=32)
    assert not VectorShards(tmp_path / "v").complete()
    calls.clear()
    vs = VectorShards(tmp_path / "v").build(texts, lambda b: (calls.append(len(b)), hashed_bow_embed(b))[1],
                                            batch_size=16, shard_rows=32)
    assert sum(calls) == 250 - 2 * 32  # the two finished shards were kept
    np.testing.assert_array_equal(vs.load(), l2_normalize(hashed_bow_embed(texts)))
    assert vs.meta() == {"rows": 250, "dim": 512, "shards": 8}


def test_pipeline_on_a_store_equals_the_in_memory_corpus(tmp_path):
    seeds = sample_seed_ids(iter(load_corpus(DEMO)), 12)
    cfg = FRetConfig(neighbours=4, progress=False)
    for name, corpus in (("dict", load_corpus(DEMO)), ("store", open_corpus(_shard(tmp_path)))):
        FRetPipeline(CachedLLM(FakeLLM(), None), hashed_bow_embed, corpus, workdir=tmp_path / name,
                     config=cfg).run(seeds, tmp_path / f"{name}.jsonl")
    assert (tmp_path / "dict.jsonl").read_bytes() == (tmp_path / "store.jsonl").read_bytes()


def test_parallel_map_pulls_a_generator_lazily():
    pulled, seen_ahead = [], []
    lock = threading.Lock()
    done = [0]

    def items():
        for i in range(200):
            with lock:
                pulled.append(i)
                seen_ahead.append(len(pulled) - done[0])
            yield i

    def work(i):
        time.sleep(0.001)
        return i

    def on_result(i, r):
        with lock:
            done[0] += 1
    assert parallel_map(work, items(), concurrency=4, on_result=on_result, progress=False) == 200
    assert max(seen_ahead) <= 2 * 4 + 1  # never more than 2 x concurrency submitted ahead
