"""Independent check of the GGUF -> Flax weight mapping: our Gemma 3 encoder in causal mode, with the tied LM head,
against the embedded llama.cpp model (llama-cpp-python, the same GGUF file) on a set of prompts.

    python experiments/backbones/llama_agreement.py --out experiments/backbones/results/llama_agreement.json

For every prompt both models see the same token ids (ours, from the GGUF vocabulary; llama.cpp's own tokenisation
is compared too). Reported: top-1 next-token agreement, top-5 overlap, the logit gap between llama.cpp's top two
(a flip on a near-tie is precision, not mapping), and the max |logit difference| on llama.cpp's top 5. llama.cpp
multiplies Q4_K/Q5_0/Q8_0 weights against activations it quantises to 8 bits; we multiply the dequantised float32
weights, so logits differ at the 1e-1 level while a wrong mapping changes everything.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "The mitochondria is the powerhouse of the",
    "def fibonacci(n):\n    if n <",
    "import numpy as",
    "The first president of the United States was George",
    "In 1969, Neil Armstrong became the first person to walk on the",
    "Photosynthesis converts sunlight, water and carbon dioxide into",
    "Monday, Tuesday, Wednesday,",
    "one, two, three, four,",
    "The opposite of hot is",
    "To be or not to be, that is the",
    "A dog is a domesticated",
    "The largest planet in our solar system is",
    "SELECT name FROM users WHERE",
    "Paris is to France as Berlin is to",
    "The patient was diagnosed with type 2",
    "Machine learning is a subfield of artificial",
    "The stock market fell sharply on",
    "Please translate the following sentence into French:",
    "Question: What is the boiling point of water?\nAnswer:",
    "The chemical symbol for gold is",
    "She opened the door and saw",
    "Protein folding is determined by the sequence of amino",
    "The Eiffel Tower is located in",
    "My favourite colour is",
    "for i in range(10):\n    print(",
    "The speed of light in a vacuum is approximately",
    "Claim: Vitamin D supplementation reduces the risk of",
    "The sun rises in the east and sets in the",
    "Breaking news: scientists have discovered",
    "The recipe calls for two cups of flour and one cup of",
    "Shakespeare wrote Romeo and",
    "The human heart has four",
    "In summary, the results of this study suggest that",
    "The train from London to Edinburgh takes about",
    "Dear Sir or Madam, I am writing to",
    "E = mc",
]


def compare(gguf_path, prompts, *, n_ctx: int = 64) -> dict:
    import jax
    from llama_cpp import Llama

    from gecko_jax.models import Encoder, gemma3, gguf_io

    tokenizer = gguf_io.tokenizer_from_gguf(gguf_path)
    config, params = gguf_io.load_gguf(gguf_path, causal=True)
    enc = Encoder(config)
    states = jax.jit(lambda p, i, m: enc.apply({"params": p}, i, m, method=enc.encode_tokens))
    # logits_all: llama-cpp-python keeps `scores` only then (n_ctx x vocab floats: keep n_ctx small)
    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)
    rows = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt).ids
        llama_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[len(ids) - 1], np.float32)
        if not np.any(theirs):
            raise RuntimeError("llama.cpp returned no logits (llama-cpp-python keeps them only with logits_all)")
        arr = np.asarray([ids], np.int32)
        hidden = states(params, arr, np.ones_like(arr))
        ours = np.asarray(gemma3.lm_logits(params["backbone"], hidden[0, -1]))
        t5, o5 = np.argsort(-theirs)[:5], np.argsort(-ours)[:5]
        rows.append({"prompt": prompt, "n_tokens": len(ids), "same_tokenisation": list(llama_ids) == list(ids),
                     "llama_top1": int(t5[0]), "ours_top1": int(o5[0]), "top1_agree": bool(t5[0] == o5[0]),
                     "top5_overlap": len(set(t5) & set(o5)),
                     "llama_top2_gap": float(theirs[t5[0]] - theirs[t5[1]]),
                     "max_abs_logit_diff_llama_top5": float(np.abs(theirs[t5] - ours[t5]).max()),
                     "llama_top1_token": tokenizer.id_to_token(int(t5[0])),
                     "ours_top1_token": tokenizer.id_to_token(int(o5[0]))})
    agree = sum(r["top1_agree"] for r in rows)
    clear = [r for r in rows if r["llama_top2_gap"] > 0.5]
    return {"gguf": pathlib.Path(gguf_path).name, "prompts": len(rows), "top1_agreement": agree / len(rows),
            "top1_agree_count": agree, "clear_margin_prompts": len(clear),
            "top1_agreement_clear_margin": sum(r["top1_agree"] for r in clear) / max(len(clear), 1),
            "mean_top5_overlap": float(np.mean([r["top5_overlap"] for r in rows])),
            "max_abs_logit_diff": float(max(r["max_abs_logit_diff_llama_top5"] for r in rows)),
            "same_tokenisation": sum(r["same_tokenisation"] for r in rows), "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=None, help="GGUF file (default: the shipped Gemma 3 270M)")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    if args.gguf is None:
        from data_gen.llm import default_gguf_path

        args.gguf = default_gguf_path()
    t0 = time.perf_counter()
    res = compare(args.gguf, PROMPTS)
    res["seconds"] = time.perf_counter() - t0
    summary = {k: v for k, v in res.items() if k != "rows"}
    print(json.dumps(summary, indent=2))
    for r in res["rows"]:
        if not r["top1_agree"]:
            print("disagree:", json.dumps(r))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
