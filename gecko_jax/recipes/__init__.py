"""The top layer's jobs, built from the library below (``train``, ``eval``, ``data_gen``): today the quickstart
(FRet -> the Gecko recipe -> before/after evaluation), one module per stage.

    from gecko_jax.recipes.quickstart import run_quickstart
    out = run_quickstart("runs/qs", tiny=True, llm="fake")

Modules: ``options`` (the flags as a dataclass, budgets, validation), ``data`` (data root, tiny copies),
``fret_stage`` (stages 1-2), ``training`` (stage 4: the recipe, or ``--fret-only``), ``evaluation`` (stages 3 and 5),
``reports`` (table, Markdown, JSON), ``quickstart`` (the job), ``store`` (:class:`~gecko_jax.recipes.store.StageStore`:
content-keyed stage folders with an atomic done marker), ``runlog`` (log line, key digest). The command line
(``gecko_jax.cli``) and the experiments sit above this package; nothing below imports it.
"""
