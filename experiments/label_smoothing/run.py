"""Label smoothing under symmetric label noise: the p x n grid and its comparison with p*(r).

Usage (from the repository root)::

    .venv/bin/python experiments/label_smoothing/run.py                  # every configs/*.json -> results/
    .venv/bin/python experiments/label_smoothing/run.py --config experiments/label_smoothing/configs/mnist_sgd.json \
        --seeds 0-2 --workdir runs/ls                                    # results/mnist_sgd_seed{0,1,2}.json
    .venv/bin/python experiments/label_smoothing/run.py --quick          # CI budget, checks every p learns
    .venv/bin/python experiments/label_smoothing/run.py --report         # README tables from results/*.json

Trains on ``gecko_jax.train``'s classifier grid (one vmapped program per loss family). Writes
``results[_quick]/<config>.json`` (per-epoch histories of every run), ``<config>_summary.json`` and the plots
``<config>_heatmap.png`` (final test accuracy and CE over (n, p), argmax p per noise rate, the p*(r) curve) and
``<config>_curves.png`` (test accuracy per epoch).
"""
from __future__ import annotations

import pathlib
import re
import sys

import numpy as np

from gecko_jax.data.tfds_local import NUM_CLASSES
from gecko_jax.losses import optimal_smoothing
from gecko_jax.train import grid_runner

HERE = pathlib.Path(__file__).resolve().parent


def _num_classes(results: dict) -> int:
    cfg = results["config"]
    return NUM_CLASSES[cfg["data"]["dataset"] if "data" in cfg else cfg["dataset"]]  # older files: flat config


def _is_rule(r: dict) -> bool:
    """A run whose p was resolved from a rule ("optimal" / "agnostic"), not a grid point."""
    return isinstance(r.get("loss_config", {}).get("smoothing_p"), str)


def target_entropy(p: float, k: int) -> float:
    """Entropy of the smoothed target: the lowest mean training loss, reached when every row's target is fitted."""
    return float(-(p * np.log(p) + ((1 - p) * np.log((1 - p) / (k - 1)) if p < 1 else 0.0)))


def excess_loss(r: dict, k: int) -> float:
    """Final-epoch mean training loss minus its floor :func:`target_entropy` (0 = the noisy labels are fitted)."""
    return r["train_loss"][-1] - target_entropy(r["p"], k)


def _row(rows: list[dict], k: int, n: float) -> dict:
    ps = [r["p"] for r in rows]
    acc = [r["final_test_acc"] for r in rows]
    loss = [r["test_loss"][-1] for r in rows]
    pstar = float(optimal_smoothing(n, k))
    near = int(np.argmin(np.abs(np.asarray(ps) - pstar)))
    return {"p": ps, "final_acc": acc, "final_loss": loss, "best_acc": [r["best_test_acc"] for r in rows],
            "best_epoch": [r["best_epoch"] for r in rows],
            "final_excess_loss": [excess_loss(r, k) for r in rows],
            "p_star": pstar, "argmax_acc_p": ps[int(np.argmax(acc))], "argmin_loss_p": ps[int(np.argmin(loss))],
            "acc_at_p_nearest_pstar": acc[near], "p_nearest_pstar": ps[near],
            "acc_at_p1": acc[ps.index(1.0)] if 1.0 in ps else None}


def summarise(results: dict) -> dict:
    """Per noise rate: final accuracy / CE per grid p, argmax-accuracy p, argmin-CE p, p*(r), and the runs whose
    p came from a rule (``optimal`` = p*(r), ``agnostic``)."""
    k = _num_classes(results)
    runs = results["runs"]
    out = {"config": results["config"]["name"], "wall_s": results["wall_s"], "machine": results.get("machine"),
           "num_classes": k, "per_noise": {}}
    for n in sorted({r["noise_rate"] for r in runs}):
        rows = sorted((r for r in runs if r["noise_rate"] == n and not _is_rule(r)), key=lambda r: r["p"])
        row = _row(rows, k, n) if rows else {"p_star": float(optimal_smoothing(n, k))}
        row["rules"] = {r["loss_config"]["smoothing_p"]: {"p": r["p"], "final_acc": r["final_test_acc"],
                                                          "best_acc": r["best_test_acc"],
                                                          "final_excess_loss": excess_loss(r, k)}
                        for r in runs if r["noise_rate"] == n and _is_rule(r)}
        out["per_noise"][str(n)] = row
    return out


def plot(results: dict, summary: dict, path: pathlib.Path, *, title: str | None = None) -> None:
    """Heat maps of final accuracy and CE over (n, p) with the best p per row and the p*(r) curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_noise"]
    noises = sorted(float(n) for n in per)
    ps = per[str(noises[0])].get("p", [])
    if len(noises) < 2 or len(ps) < 2 or any(per[str(n)].get("p") != ps for n in noises):
        return  # a heat map needs the same p values on every noise row (the --quick runs are not a grid)
    k = summary.get("num_classes", 10)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, name, best in ((axes[0], "final_acc", "final test accuracy", np.argmax),
                                (axes[1], "final_loss", "final test CE (clean labels)", np.argmin)):
        _heatmap(ax, fig, np.array([per[str(n)][key] for n in noises]), ps, noises, best, k)
        ax.set_title(name)
    fig.suptitle(title or f"{summary['config']}")
    fig.tight_layout()
    grid_runner.save_png(fig, path, dpi=110)
    plt.close(fig)


def _heatmap(ax, fig, grid, ps, noises, best, k) -> None:
    # Cells are placed by index (p values need not be evenly spaced); p*(r) is interpolated onto that axis.
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < grid.mean() else "k")
    ax.scatter([int(best(row)) for row in grid], range(len(noises)), marker="x", color="red",
               label="best p per noise rate")
    fine = np.linspace(noises[0], noises[-1], 50)
    ax.plot(np.interp(optimal_smoothing(fine, k), ps, range(len(ps))), np.interp(fine, noises, range(len(noises))),
            color="white", label="p*(r), r = 1 - n")
    ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
    ax.set_yticks(range(len(noises)), [f"{n:g}" for n in noises])
    ax.set_xlabel("p (mass on the observed label)")
    ax.set_ylabel("symmetric noise rate n")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)


def plot_curves(results: dict, path: pathlib.Path) -> None:
    """Clean test accuracy per epoch, one panel per noise rate, one line per p (the memorisation dynamics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    noises = sorted({r["noise_rate"] for r in runs})
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.6), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, n in zip(axes[0], noises):
        for r in sorted((r for r in runs if r["noise_rate"] == n), key=lambda r: r["p"]):
            style = "--" if _is_rule(r) else "-"
            ax.plot(range(1, len(r["test_acc"]) + 1), r["test_acc"], style, color=cmap(r["p"]),
                    label=f"p={r['p']:.3g}" + (f" ({r['loss_config']['smoothing_p']})" if _is_rule(r) else ""))
        ax.set_title(f"noise {n}: clean test accuracy")
        ax.set_xlabel("epoch")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    grid_runner.save_png(fig, path, dpi=100)
    plt.close(fig)


def analyse(results: dict, out_dir: pathlib.Path) -> dict:
    summary = summarise(results)
    plot(results, summary, out_dir / f"{summary['config']}_heatmap.png")
    plot_curves(results, out_dir / f"{summary['config']}_curves.png")
    return summary


def check_quick(summary: dict) -> None:
    """What the CI budget may assert (CONTRIBUTING.md, "Direction checks"): at every checked noise rate each p learns
    the clean task despite the noise (best-epoch clean test accuracy above ``QUICK_MIN_BEST_ACC``), and the grid holds
    the p nearest p*(r). The paper's direction (p* beats p = 1 at the last epoch) is reported in the README across
    seeds, not asserted: on this budget it is smaller than the seed-to-seed (and CPU-to-CPU) spread."""
    for n, floor in QUICK_MIN_BEST_ACC.get(re.sub(r"_seed\d+$", "", summary["config"]), {}).items():
        row = summary["per_noise"][n]
        if row["acc_at_p1"] is None or abs(row["p_nearest_pstar"] - row["p_star"]) > 0.05:
            raise AssertionError(f"noise {n}: the grid needs p = 1 and a p within 0.05 of p* = {row['p_star']:.3f} "
                                 f"(has {row['p']})")
        worst = min(row["best_acc"])
        if not worst > floor:
            raise AssertionError(f"noise {n}: best-epoch clean test accuracy {worst:.3f} at "
                                 f"p = {row['p'][row['best_acc'].index(worst)]} is not above {floor}")


# Quick budget of mnist_grid (2,000 rows, 1,000 test rows, batch 32, 8 epochs; p = 0.2 / 0.4 / 1 at n = 0.6),
# seeds 0 / 1 / 2 / 3 / 4 on an AMD EPYC (AVX-512), 2026-11-30: best-epoch accuracy of every p 0.827-0.883 (chance
# 0.1), asserted > 0.5. Final-epoch accuracy of p* = 0.2 minus p = 1: +0.010 / +0.125 / +0.016 / +0.033 / +0.039, and
# -0.018 at seed 0 on an AVX2-only AMD EPYC (issue 14): not asserted.
QUICK_MIN_BEST_ACC = {"mnist_grid": {"0.6": 0.5}}


def grid_table(summary: dict) -> str:
    """One seed: per noise rate, the best grid p against p*(r) and the accuracy at p* and at p = 1."""
    rows = []
    for n, row in summary["per_noise"].items():
        if "p" not in row:
            continue
        rule = row["rules"].get("optimal")
        rows.append([n, f"{row['p_star']:.3f}", f"{row['argmax_acc_p']:g} ({max(row['final_acc']):.3f})",
                     f"{row['acc_at_p_nearest_pstar']:.3f} (p = {row['p_nearest_pstar']:g})",
                     None if rule is None else rule["final_acc"], row["acc_at_p1"], f"{row['argmin_loss_p']:g}"])
    return grid_runner.markdown_table(["n", "p*(r)", "argmax-accuracy p (acc)", "acc at grid p nearest p*",
                                       "acc at p = p* (optimal run)", "acc at p = 1", "argmin test-CE p"], rows)


def per_p_table(summary: dict, key: str = "final_acc") -> str:
    """Final-epoch accuracy for every (n, grid p)."""
    noises = [n for n, row in summary["per_noise"].items() if "p" in row]
    ps = summary["per_noise"][noises[0]]["p"]
    rows = [[n] + [f"{v:.3f}" for v in summary["per_noise"][n][key]] for n in noises]
    return grid_runner.markdown_table(["n \\ p"] + [f"{p:g}" for p in ps], rows)


def seeds_table(summaries: list[dict]) -> str:
    """Several seeds: where the best grid p lands against p*(r), and p* vs p = 1 (mean ± sd over seeds)."""
    rows = []
    for n in (n for n, row in summaries[0]["per_noise"].items() if "p" in row):
        per = [s["per_noise"][n] for s in summaries]
        best = [r["argmax_acc_p"] for r in per]
        star = [r["rules"].get("optimal", {}).get("final_acc", r["acc_at_p_nearest_pstar"]) for r in per]
        gain = [a - r["acc_at_p1"] for a, r in zip(star, per)]
        within = sum(abs(b - r["p_star"]) <= 0.1 + 1e-9 for b, r in zip(best, per))
        rows.append([n, f"{per[0]['p_star']:.3f}", " / ".join(f"{b:g}" for b in best), f"{within}/{len(per)}",
                     grid_runner.mean_sd(star), grid_runner.mean_sd([r["acc_at_p1"] for r in per]),
                     grid_runner.mean_sd([max(r["final_acc"]) for r in per]),
                     " / ".join(f"{g:+.3f}" for g in gain),
                     grid_runner.mean_sd([r["final_excess_loss"][r["p"].index(1.0)] for r in per]),
                     grid_runner.mean_sd([r["rules"].get("optimal", {}).get("final_excess_loss") for r in per])])
    return grid_runner.markdown_table(
        ["n", "p*(r)", "best grid p per seed", "best p within ±0.1 of p*", "final acc at p*", "final acc at p = 1",
         "final acc at the best grid p", "p* − (p = 1) per seed", "train loss above its floor, p = 1",
         "same, p = p*"], rows)


def mean_grid_table(summaries: list[dict]) -> str:
    """Mean final accuracy over seeds for every (n, grid p)."""
    noises = [n for n, row in summaries[0]["per_noise"].items() if "p" in row]
    ps = summaries[0]["per_noise"][noises[0]]["p"]
    rows = [[n] + [f"{np.mean([s['per_noise'][n]['final_acc'][j] for s in summaries]):.3f}" for j in range(len(ps))]
            for n in noises]
    return grid_runner.markdown_table(["n \\ p"] + [f"{p:g}" for p in ps], rows)


def tables(results_dir: pathlib.Path) -> dict[str, str]:
    """The README's Markdown tables, from the committed result files (missing files are skipped)."""
    out = {}
    for name in ("mnist_grid", "mr_grid", "cifar10_points"):
        if (res := grid_runner.load_result(results_dir, name)) is not None:
            out[name] = grid_table(summarise(res)) + "\n" + grid_runner.machine_line([res])
            if name != "cifar10_points":  # two p values per noise rate: the table above says it all
                out[f"{name}_per_p"] = per_p_table(summarise(res))
    for name in ("mnist_converged", "mnist_converged_long", "mr_finetune_grid"):  # seeds of one config: a row per n
        results = grid_runner.seed_results(results_dir, name)
        if results:
            seeds = [summarise(r) for r in results]
            out[name] = seeds_table(seeds) + "\n" + grid_runner.machine_line(results)
            out[f"{name}_mean"] = mean_grid_table(seeds)
    if (data := grid_runner.load_result(results_dir, "mnist_grid_quick_before_after")) is not None:
        out["quick_before_after"] = grid_runner.before_after_table(data)
    return out


def main(argv=None) -> int:
    return grid_runner.cli(argv, here=HERE, analyse=analyse, check_quick=check_quick, tables=tables)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
