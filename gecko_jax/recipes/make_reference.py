"""``python -m gecko_jax.recipes.make_reference --data-dir DIR [--only eval negatives pool]``: compute and write the
base-model reference files of :mod:`gecko_jax.recipes.reference` (the maintainers' command; rerun it when the base
model, the data, the quickstart's default tasks, widths or FRet pool, or the shipped recipe's mining change:
``tests/test_recipes_reference.py`` says when the shipped files went stale)."""
from __future__ import annotations

import argparse
import pathlib
import tempfile

from gecko_jax.recipes.reference import REFERENCE_DIR
from gecko_jax.recipes.runlog import log


KINDS = ("eval", "negatives", "pool")


def make(data_dir, *, directory=REFERENCE_DIR, recipe: str | None = None, kinds=KINDS) -> list[pathlib.Path]:
    """Compute the quickstart's base-model references over ``data_dir`` and write those of ``kinds`` to
    ``directory``: the evaluation of the base model (the quickstart's default tasks and widths, raw text), the hard
    negatives of every retrieval source of ``recipe`` (default: the shipped recipe) that mines them, and the vectors
    of the default FRet retrieval pool."""
    from gecko_jax.embedder import Embedder
    from gecko_jax.eval.cache import EmbeddingCache, default_cache_dir
    from gecko_jax.recipes.data import resolve_data_dir
    from gecko_jax.recipes.evaluation import evaluate
    from gecko_jax.recipes.gecko import DEFAULT_RECIPE, load_recipe
    from gecko_jax.recipes.gecko_sources import LazyBase, mined_negatives
    from gecko_jax.recipes.options import BASE_MODEL, DEFAULT_TASKS, QuickstartOptions

    root = resolve_data_dir(data_dir)
    base = Embedder.from_pretrained(BASE_MODEL)
    written = []
    if "eval" in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            evaluate(base, pathlib.Path(tmp) / "base-none", tasks=list(DEFAULT_TASKS), dims=QuickstartOptions().dims,
                     prompts=None, data_root=root, reference=False, record=directory)
        written.append("eval")
    if "negatives" in kinds:
        cfg = load_recipe(recipe or DEFAULT_RECIPE)
        lazy = LazyBase(cfg.model, EmbeddingCache(default_cache_dir()), reference=False)  # the eval's vectors
        for spec in cfg.sources:
            if spec.kind == "retrieval" and spec.mine_negatives:
                mined_negatives(spec, cfg, root, lazy, record=directory)
                written.append(f"negatives {spec.name}")
    if "pool" in kinds:
        written.append(f"pool vectors ({make_pool_vectors(base, root, directory=directory)} rows)")
    log(f"reference: wrote {', '.join(written)} to {directory}")
    return sorted(pathlib.Path(directory).glob("*.json"))


def make_pool_vectors(base, root, *, directory=REFERENCE_DIR, opts=None) -> int:
    """Embed the quickstart's FRet retrieval pool (``opts``, default: the defaults) with ``base`` as FRet does and
    store the vectors; returns the rows written."""
    from gecko_jax.embedder import embed_fns
    from gecko_jax.recipes import reference
    from gecko_jax.recipes.fret_stage import fret_inputs, pool_passages, pool_vectors_key
    from gecko_jax.recipes.options import QuickstartOptions

    opts = opts or QuickstartOptions()
    corpus, pool_ids, _ = fret_inputs(opts, root)
    texts, key = pool_vectors_key(base, pool_passages(opts, corpus, pool_ids))
    reference.store_vectors(key, embed_fns(base)[0](texts), directory=directory)
    return len(texts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the quickstart's base-model reference files (maintainers).")
    p.add_argument("--data-dir", default=None, help="data folder (default: $GECKO_JAX_DATA, the cache, a download)")
    p.add_argument("--out", default=str(REFERENCE_DIR), help=f"folder (default: {REFERENCE_DIR})")
    p.add_argument("--recipe", default=None, help="recipe whose mined negatives to store (default: the shipped one)")
    p.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS), help="which files (default: all)")
    args = p.parse_args(argv)
    for path in make(args.data_dir, directory=args.out, recipe=args.recipe, kinds=args.only):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
