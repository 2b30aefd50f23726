"""Train-state memory per device under each sharding rule set: BERT-base and the Gemma 3 270M encoder.

    python bench/fsdp_memory.py                      # 8 simulated CPU devices, no weights needed, seconds
    python bench/fsdp_memory.py --devices 16 --models gemma3-270m
    python bench/fsdp_memory.py --compile 64 128     # also XLA's own per-device figure for one train step

What it measures: the bytes each device holds for the *train state* (parameters, AdamW moments, step/RNG), read
from the shardings that ``create_state`` would give every leaf (``state_layout``: nothing is allocated), for the
mesh ``data x fsdp x model`` and the rules of each row. It does not count activations, gradients in flight or the
all-gathered weights of the layer being computed (FSDP materialises one layer's weights at a time); ``--compile``
adds XLA's ``memory_analysis()`` of the compiled step for a batch (argument + output + temporary bytes per device),
which does count them, and on a GPU/TPU host is the number to size a run with (on CPU it takes minutes per row).
Both models use random weights of the published shapes; no files are read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

BERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}
# The shape of google/gemma-3-270m (config.json as gecko_jax converts the shipped GGUF; bidirectional encoder).
GEMMA3_270M = {
    "architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
    "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256, "sliding_window": 512, "use_bidirectional_attention": True,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
    "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
}
# Tensor-parallel rules for both families: the first matmul of attention / MLP split by columns over `model`, the
# second by rows (Megatron layout), the other dimension over fsdp; everything else over fsdp alone.
TP_RULES = [["(qkv|mlp_in|gate_up)/kernel$", ["fsdp", "model"]],
            ["(attention/out|o_proj|mlp_out|down_proj)/kernel$", ["model", "fsdp"]],
            [".*", "fsdp"]]


def rule_sets(devices: int) -> list[tuple[str, dict, list]]:
    """(name, sharding config, optimizer.frozen) rows."""
    rows = [("replicated", {}, [])]
    for f in (2, 4, 8, 16, 32):
        if f <= devices and devices % f == 0:
            rows.append((f"fsdp={f}", {"fsdp": f}, []))
    if devices % 4 == 0 and devices >= 8:
        rows.append((f"fsdp={devices // 2} x model=2 (TP rules)", {"fsdp": devices // 2, "model": 2,
                                                                   "rules": TP_RULES}, []))
    return rows


def encoder_config(name: str):
    from gecko_jax.models import EncoderConfig

    if name == "bert-base":
        return EncoderConfig(**BERT_BASE)
    if name == "gemma3-270m":
        return EncoderConfig.from_hf(GEMMA3_270M)
    if name == "tiny":  # a check of this script itself
        return EncoderConfig.tiny()
    raise SystemExit(f"unknown model {name!r}: bert-base, gemma3-270m or tiny")


def train_config(sharding: dict, frozen: list, batch: int, seq: int):
    from gecko_jax import train

    return train.from_dict({
        "trainer": "contrastive", "steps": 1000, "progress": False, "model": {"tiny": {}},
        "data": {"datasets": [{"path": "unused.jsonl"}], "batch_size": batch, "max_length": seq, "buckets": [seq]},
        "optimizer": {"name": "adamw", "learning_rate": 2e-5, "frozen": frozen},
        "loss": {"name": "gecko", "temperature": 0.05, "same_tower": True}, "sharding": sharding})


def state_bytes(abstract, shardings) -> dict:
    import jax
    import numpy as np

    out = {"params": 0, "optimizer": 0, "other": 0, "replicated_total": 0}
    flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
    for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings)):
        name = jax.tree_util.keystr(path)
        nbytes = int(np.prod(sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
        kind = "params" if name.startswith(".params") else "optimizer" if name.startswith(".opt_state") else "other"
        out[kind] += nbytes
        out["replicated_total"] += int(np.prod(leaf.shape)) * leaf.dtype.itemsize
    out["total"] = out["params"] + out["optimizer"] + out["other"]
    return out


def compiled_bytes(config, mesh, task, batch: int, seq: int) -> dict:
    """XLA's memory analysis of one compiled train step (per device)."""
    import jax
    import numpy as np

    from gecko_jax import train
    from gecko_jax.train.state import batch_sharding, state_layout

    abstract, shardings = state_layout(config, mesh, task)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    tokens = {k: jax.ShapeDtypeStruct((batch, seq), np.int32, sharding=batch_sharding(mesh))
              for k in ("input_ids", "attention_mask", "token_type_ids")}
    ids = jax.ShapeDtypeStruct((batch,), np.int32, sharding=batch_sharding(mesh))
    where = jax.ShapeDtypeStruct((batch,), np.bool_, sharding=batch_sharding(mesh))
    step = train.make_step(task.step_loss(), config, mesh)
    step._build(state)
    m = step._jitted.lower(state, {"query": tokens, "positive": tokens, "ids": ids, "where": where}).compile() \
        .memory_analysis()
    if m is None:
        return {}
    return {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes, "temp": m.temp_size_in_bytes,
            "alias": m.alias_size_in_bytes,
            "peak_estimate": m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices (ignored on GPU/TPU)")
    ap.add_argument("--models", nargs="+", default=["bert-base", "gemma3-270m"])
    ap.add_argument("--compile", nargs=2, type=int, metavar=("BATCH", "SEQ"),
                    help="also compile one train step of BATCH pairs x SEQ tokens and report XLA's figure")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    if "jax" not in sys.modules and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={args.devices} "
                                   + os.environ.get("XLA_FLAGS", ""))
    import jax

    from gecko_jax.models import Encoder
    from gecko_jax.train.contrastive import ContrastiveTask
    from gecko_jax.train.state import mesh_from_config, state_layout

    n = jax.device_count()
    print(f"devices: {n} x {jax.devices()[0].device_kind}; jax {jax.__version__}")
    batch, seq = args.compile or (n * 2, 128)
    rows = []
    for model in args.models:
        cfg = encoder_config(model)
        sets = rule_sets(n)
        if model == "gemma3-270m":  # the shipped fine-tuning recipe freezes the 168M-parameter token table
            sets += [(name + ", token table frozen", sh, ["backbone/embed_tokens"]) for name, sh, _ in sets
                     if name in ("replicated", f"fsdp={n}")]
        for name, sharding, frozen in sets:
            config = train_config(sharding, frozen, batch, seq)
            task = ContrastiveTask(config, Encoder(cfg), stream=None)
            mesh = mesh_from_config(config)
            abstract, shardings = state_layout(config, mesh, task)
            row = {"model": model, "rules": name, "mesh": dict(mesh.shape), **state_bytes(abstract, shardings)}
            if args.compile:
                row["compiled"] = compiled_bytes(config, mesh, task, batch, seq)
            rows.append(row)
            mib = 2 ** 20
            extra = ""
            if row.get("compiled"):
                extra = f" | XLA step peak {row['compiled']['peak_estimate'] / mib:9.1f} MiB"
            print(f"{model:12s} {name:40s} params {row['params'] / mib:8.1f} MiB  optimizer "
                  f"{row['optimizer'] / mib:8.1f} MiB  total {row['total'] / mib:8.1f} MiB/device "
                  f"(whole state {row['replicated_total'] / mib:8.1f} MiB){extra}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
