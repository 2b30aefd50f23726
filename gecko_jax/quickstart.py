"""``gecko-jax quickstart``: the whole Gecko recipe on bundled defaults, FRet -> mixture fine-tuning -> evaluate.

Stages (each resumable: a re-run reuses the FRet stage files and LLM cache, the recipe's finished stages and the
saved evaluation results, so an interrupted run continues where it stopped):

1. FRet (Gecko Sec. 3) on ``--passages`` SciFact *corpus* passages (never its queries): the LLM (default: the
   embedded Gemma 3 270M, no key, no network) writes a task + query per seed passage;
2. the ``--neighbours`` nearest passages of ``task + query`` (all-MiniLM-L6-v2; the default pool's vectors are
   shipped, :mod:`gecko_jax.recipes.reference`) in a ``--pool`` of the corpus are
   reranked by the same LLM with query likelihood and relevance classification, fused by
   :math:`R = 1/r_{QL} + 1/r_{RC}`; positive = top-1 by R, hard negative = the lowest ranked; the fraction of
   positives that differ from the seed is reported (paper: ~15%);
3. the base model is evaluated (raw text, how it was trained: the "before" column; this also caches the SciFact
   corpus embeddings the recipe mines hard negatives with);
4. the Gecko recipe (:mod:`gecko_jax.recipes.gecko`, config ``--recipe``, default
   ``gecko_jax/configs/gecko_recipe_minilm.json``) with this run's FRet records as its FRet source: pre-finetuning
   on corpus title -> abstract pairs, then fine-tuning on the unified mixture (FRet + NLI + classification as
   retrieval + STS pairs + SciFact train qrels; one source per batch), Gecko loss with hard and same-tower
   negatives and Matryoshka, then interpolation with the base weights;
5. the recipe's model is evaluated with Gecko task prompts (its training format: the headline column, fixed in
   advance, not picked on test scores), and on raw text with ``--eval-prompts gecko,none``. The before/after table
   is printed and saved as JSON + Markdown in the output folder and next to the exported model.

``--fret-only`` runs the earlier, FRet-only fine-tuning (``gecko_jax/configs/quickstart_minilm.json``) instead of
the recipe. Passages are cut to ``--max-passage-chars`` (at a word boundary) everywhere in stages 1-2.

Example:
  >>> from gecko_jax.quickstart import run_quickstart  # doctest: +SKIP
  >>> res = run_quickstart("runs/quickstart")  # doctest: +SKIP
  >>> res["table_md"]  # doctest: +SKIP

Reference: J. Lee et al., "Gecko: Versatile Text Embeddings Distilled from Large Language Models", arXiv:2403.20327.
"""
from __future__ import annotations

# The quickstart lives in gecko_jax.recipes, one module per stage; these are its public names.
from gecko_jax.data.mixture import cut_text  # noqa: F401
from gecko_jax.recipes.data import make_tiny_data, resolve_data_dir  # noqa: F401
from gecko_jax.recipes.evaluation import EvalResult, evaluate  # noqa: F401
from gecko_jax.recipes.fret_stage import FRetOutput, fret, run_fret  # noqa: F401
from gecko_jax.recipes.options import (BASE_MODEL, CONFIG_RESOURCE, DEFAULT_TASKS, PROMPT_MODES,  # noqa: F401
                                       QUICKSTART_PREFINETUNE_STEPS, QUICKSTART_STEPS, TINY_TASKS, QuickstartOptions,
                                       resolve_options)
from gecko_jax.recipes.quickstart import estimate_line, run_quickstart  # noqa: F401
from gecko_jax.recipes.reports import build_table  # noqa: F401
from gecko_jax.recipes.training import (Finetuned, finetune, recipe_config, run_recipe_stage,  # noqa: F401
                                        run_training, train_config)
