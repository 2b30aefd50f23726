"""The top layer's jobs, built from the library below (``train``, ``eval``, ``data_gen``): the Gecko recipe (sources
-> pre-finetuning -> mixture fine-tuning -> interpolation) and the quickstart (FRet -> the recipe -> before/after
evaluation), one module per stage.

    from gecko_jax.recipes.gecko import RecipeConfig, run_recipe
    result = run_recipe(RecipeConfig.load(), "runs/recipe")     # or a RecipeConfig built in Python
    from gecko_jax.recipes.quickstart import run_quickstart
    out = run_quickstart("runs/qs", tiny=True, llm="fake")

The recipe: ``gecko_config`` (:class:`RecipeConfig`, :class:`SourceSpec`, the JSON loader), ``gecko_sources``
(stage 0), ``gecko`` (stages 1-3, :func:`run_recipe`). The quickstart: ``options`` (the flags as a dataclass,
budgets, validation), ``data`` (data root, tiny copies), ``fret_stage`` (stages 1-2: ``fret -> FRetOutput``),
``training`` (stage 4, the recipe or ``--fret-only``: ``finetune -> Finetuned``, the model in memory and exported),
``evaluation`` (stages 3 and 5: ``evaluate -> EvalResult``), ``reports`` (table, Markdown, JSON), ``quickstart``
(the job). Shared: ``store`` (:class:`~gecko_jax.recipes.store.StageStore`: content-keyed stage folders with an
atomic done marker, used by every stage and by the experiments), ``runlog`` (log line, key digest). The command line
(``gecko_jax.cli``) and the experiments sit above this package; nothing below imports it.
"""
