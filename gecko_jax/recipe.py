"""The Gecko recipe's public names, kept importable here: the code lives in :mod:`gecko_jax.recipes.gecko` (stages
1-3 and :func:`run_recipe`), :mod:`gecko_jax.recipes.gecko_config` (:class:`RecipeConfig` and its JSON loader) and
:mod:`gecko_jax.recipes.gecko_sources` (stage 0)."""
from gecko_jax.recipes.gecko import (CLASSIFICATION_SETS, DEFAULT_RECIPE, REPO, BuiltSource, RecipeConfig,  # noqa: F401
                                     RecipeResult, SourceSpec, StageBudget, StageResult, budget_recipe, build_sources,
                                     interpolate, interpolated_embedder, load_recipe, recipe_from_dict, run_recipe,
                                     run_stage)
