"""The quickstart's settings: its flags as one dataclass, the budgets it runs on, and their validation."""
from __future__ import annotations

import dataclasses
import pathlib

CONFIG_RESOURCE = "configs/quickstart_minilm.json"  # package data of gecko_jax (importlib.resources)
BASE_MODEL = "all-MiniLM-L6-v2"
DEFAULT_TASKS = ("scifact", "stsb", "banking77")
TINY_TASKS = ("scifact", "stsb")
PROMPT_MODES = ("gecko", "none")
# The quickstart's budget for the shipped recipe (which itself says 60 + 300 steps, the experiments' budget): the
# recipe's stages cost an estimated ~4-7 s a step on 2 idle cores (measured under load and extrapolated: README.md,
# "Budget"), so 20 + 60 steps keep the whole job near 20 minutes. --steps / --prefinetune-steps override.
QUICKSTART_STEPS = 60
QUICKSTART_PREFINETUNE_STEPS = 20


@dataclasses.dataclass
class QuickstartOptions:
    """Settings of one quickstart run (the CLI flags). ``None`` fields are derived in :func:`resolve_options`.

    Attributes:
      passages: FRet seed passages. neighbours: candidates per query, N. pool: retrieval pool size (0: the whole
      corpus; seeds are always in it). max_passage_chars: passage cut. recipe: the recipe config (None: the shipped
      one). fret_only: fine-tune on FRet alone (``quickstart_minilm.json``) instead of the recipe. steps: training
      steps (recipe: its fine-tuning stage; None: :data:`QUICKSTART_STEPS` for the shipped recipe, a ``recipe``
      file's own, or ``epochs`` passes over the FRet records with ``fret_only``). prefinetune_steps: the recipe's
      pre-finetuning steps (None: :data:`QUICKSTART_PREFINETUNE_STEPS` for the shipped recipe, else the file's).
      epochs: ``fret_only`` with ``steps`` None. batch_size / learning_rate: global batch / peak
      AdamW rate (None: the recipe's; ``fret_only``: 16 / 2e-5). llm: ``local`` | ``openai`` | ``fake``.
      eval_tasks: ``run_suite`` task names. eval_prompts: prompt modes for the fine-tuned model. dims: evaluation
      widths (None = full). recompute_base: evaluate the base model, mine its negatives and embed FRet's pool
      here even where :mod:`gecko_jax.recipes.reference` has them (same weights, data and settings). tiny: the
      pulse-test budget: 4 passages, 4 neighbours, 2 steps per stage, small sources, and evaluation on small
      subsets of the data.
    """

    passages: int = 48
    neighbours: int = 5
    pool: int = 2000
    max_passage_chars: int = 400
    recipe: str | None = None
    fret_only: bool = False
    steps: int | None = None
    prefinetune_steps: int | None = None
    epochs: float = 4.0
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 0
    llm: str = "local"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_path: str | None = None
    threads: int | None = None
    concurrency: int | None = None
    eval_tasks: tuple = DEFAULT_TASKS
    eval_prompts: tuple = ("gecko",)
    dims: tuple = (None, 256, 128)
    data_dir: str | None = None
    recompute_base: bool = False
    progress: bool = True
    tiny: bool = False


def resolve_options(**kwargs) -> QuickstartOptions:
    """Options with the ``tiny`` budget applied to every field the caller left unset."""
    opts = QuickstartOptions(**{k: v for k, v in kwargs.items() if v is not None})
    if opts.tiny:
        for name, value in (("passages", 4), ("neighbours", 4), ("pool", 48), ("steps", 2), ("batch_size", 4),
                            ("eval_tasks", TINY_TASKS), ("dims", (None, 128))):
            if kwargs.get(name) is None:
                setattr(opts, name, value)
    if opts.recipe is not None and not pathlib.Path(opts.recipe).is_file():
        raise ValueError(f"recipe: no such file {opts.recipe}")
    bad = [m for m in opts.eval_prompts if m not in PROMPT_MODES]
    if bad or not opts.eval_prompts:
        raise ValueError(f"eval_prompts: expected a non-empty subset of {PROMPT_MODES}, got {opts.eval_prompts}")
    for name in ("passages", "neighbours", "batch_size"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1 + (name == "neighbours"):
            raise ValueError(f"{name}: expected >= {1 + (name == 'neighbours')}, got {getattr(opts, name)}")
    for name in ("steps", "prefinetune_steps"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            raise ValueError(f"{name}: expected >= 1, got {getattr(opts, name)}")
    if opts.pool < 0:
        raise ValueError(f"pool: expected >= 0 (0 = the whole corpus), got {opts.pool}")
    return opts
