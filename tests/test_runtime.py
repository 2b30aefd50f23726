"""gecko_jax.runtime: CPU facts, FLOP counts, the box-speed estimate and the XLA:CPU flags our CLIs set."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import pytest

from gecko_jax import runtime
from gecko_jax.models import EncoderConfig
from tests.conftest import REPO


def test_isa_name_picks_the_widest_vector_isa():
    assert runtime.isa_name({"avx", "avx2", "fma", "avx512f", "avx512_bf16"}) == "AVX-512 +bf16"
    assert runtime.isa_name({"avx", "avx2", "fma"}) == "AVX2+FMA"
    assert runtime.isa_name({"avx"}) == "AVX"
    assert runtime.isa_name(set()) == "unknown"


def test_cpu_info_names_the_machine():
    info = runtime.cpu_info()
    assert set(info) == {"model", "cores", "isa", "flags"}
    assert info["model"] and info["cores"] >= 1
    assert info["isa"] == runtime.isa_name(info["flags"])
    assert info["isa"] in runtime.machine_line()


def test_encoder_flops_match_a_naive_count():
    cfg = EncoderConfig.tiny()
    h, f = cfg.hidden_size, cfg.intermediate_size
    lengths = [3, 17, 64]
    naive = 0.0
    for t in lengths:
        for _ in range(cfg.num_layers):
            naive += 2 * t * h * 3 * h + 2 * t * h * h + 2 * t * h * f + 2 * t * f * h  # qkv, out, mlp in, mlp out
            naive += 2 * t * t * h + 2 * t * t * h  # q k^T and weights @ v over all heads
    assert runtime.encoder_flops(cfg, lengths) == pytest.approx(naive, rel=1e-12)
    assert runtime.encoder_flops(cfg, lengths, training=True) == pytest.approx(3 * naive, rel=1e-12)
    assert runtime.encoder_flops(cfg, []) == 0


def test_estimate_scales_with_work_and_rejects_nonsense():
    cfg = EncoderConfig.tiny()
    one = runtime.estimate_encode_seconds(cfg, [100] * 10, peak_gflops=50.0)
    assert one > 0
    assert runtime.estimate_encode_seconds(cfg, [100] * 20, peak_gflops=50.0) == pytest.approx(2 * one)
    assert runtime.estimate_encode_seconds(cfg, [100] * 10, peak_gflops=100.0) == pytest.approx(one / 2)
    with pytest.raises(ValueError, match="peak_gflops"):
        runtime.estimate_encode_seconds(cfg, [10], peak_gflops=0.0)
    with pytest.raises(ValueError, match="efficiency"):
        runtime.estimate_encode_seconds(cfg, [10], peak_gflops=1.0, efficiency=1.5)


def test_matmul_peak_is_a_positive_rate():
    peak = runtime.matmul_peak_gflops(seconds=0.05)
    assert math.isfinite(peak) and peak > 0.1


def _configure_in_fresh_python(xla_flags: str | None, before: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    code = (f"{before}\nimport json, os\nfrom gecko_jax import runtime\n"
            "added = runtime.configure_cpu()\n"
            "print(json.dumps({'added': added, 'env': os.environ.get('XLA_FLAGS', ''), "
            "'flags': runtime.cpu_info()['flags']}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_configure_cpu_adds_only_flags_this_cpu_supports_and_keeps_the_users():
    got = _configure_in_fresh_python(None)
    want = [f"{name}={value}" for name, (value, needs) in runtime.CPU_XLA_FLAGS.items()
            if not needs or needs in got["flags"]]
    assert got["added"] == want
    assert got["env"].split() == want
    for name in runtime.CPU_XLA_FLAGS:  # a flag the user set wins, whatever its value
        mine = _configure_in_fresh_python(f"--xla_cpu_enable_fast_math=false {name}=123")
        assert all(not a.startswith(name + "=") for a in mine["added"])
        assert f"{name}=123" in mine["env"].split() and "--xla_cpu_enable_fast_math=false" in mine["env"].split()


def test_configure_cpu_is_a_no_op_once_jax_has_started():
    got = _configure_in_fresh_python(None, before="import jax, jax.numpy as jnp\njnp.ones(2).block_until_ready()")
    assert got["added"] == [] and got["env"] == ""


_REEXEC = ("import os, sys\nfrom gecko_jax import runtime\n"
           "print('start', os.environ.get('GECKO_JAX_MALLOC'), flush=True)\n"
           "runtime.tune_malloc()\n"
           "print('after', os.environ.get('GLIBC_TUNABLES'), 'pytest' in sys.modules)")


def _run(code: str, **env_extra) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GECKO_JAX_MALLOC", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")[:-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_tune_malloc_re_executes_once_with_the_tunables():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run(_REEXEC) == ["start None", "start tuned", f"after {runtime.MALLOC_TUNABLES} False"]
    # The user's choice wins: an opt-out, or any malloc setting of their own, means no re-exec.
    assert _run(_REEXEC, GECKO_JAX_MALLOC="system") == ["start system", "after None False"]
    assert _run(_REEXEC, MALLOC_ARENA_MAX="4") == ["start None", "after None False"]
    assert _run(_REEXEC, GLIBC_TUNABLES="glibc.malloc.arena_max=2") == ["start None", "after glibc.malloc.arena_max=2 False"]
    # Never inside pytest (it would restart the test run).
    assert _run("import pytest\n" + _REEXEC) == ["start None", "after None True"]


def test_flop_tally_adds_by_kind_and_reports_what_came_since():
    before = runtime.flops_counted()
    runtime.count_flops("test-kind", 5.0)
    runtime.count_flops("test-kind", 2.5)
    runtime.count_flops("other-test-kind", 1.0)
    assert runtime.flops_counted(since=before) == {"test-kind": 7.5, "other-test-kind": 1.0}
    assert runtime.flops_counted()["test-kind"] == before.get("test-kind", 0.0) + 7.5
    mid = runtime.flops_counted()
    assert runtime.flops_counted(since=mid) == {}


def test_config_flops_counts_bert_like_families_only():
    cfg = EncoderConfig.tiny()
    assert runtime.config_flops(cfg, [5, 9]) == runtime.encoder_flops(cfg, [5, 9])
    assert runtime.config_flops(cfg, [5], training=True) == runtime.encoder_flops(cfg, [5], training=True)
    gemma = types.SimpleNamespace(model_type="gemma3_text", hidden_size=8, intermediate_size=16, num_layers=1)
    assert runtime.config_flops(gemma, [5]) is None  # a gated MLP: not this formula
    assert runtime.config_flops(None, [5]) is None
