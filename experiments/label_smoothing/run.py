"""Label smoothing under symmetric label noise: the p x n grid and its comparison with p*(r).

Usage (from the repository root)::

    .venv/bin/python experiments/label_smoothing/run.py            # full grid (configs/*.json)
    .venv/bin/python experiments/label_smoothing/run.py --quick    # CI budget, asserts the measured direction

Writes ``results[_quick]/<config>.json`` (per-epoch histories of every run), ``<config>_summary.json`` and the
heat maps ``<config>_heatmap.png`` (final test accuracy and CE over (n, p), argmax p per noise rate, p*(r) curve).
"""
from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from experiments import common  # noqa: E402
from gecko_jax.losses import optimal_smoothing  # noqa: E402


def summarise(results: dict) -> dict:
    """Per noise rate: final accuracy / CE per p, argmax-accuracy p, argmin-CE p, p*(r), CE-vs-p* gain."""
    k = 10 if results["config"]["dataset"] in ("mnist", "cifar10") else 2
    runs = results["runs"]
    out = {"config": results["config"]["name"], "wall_s": results["wall_s"], "per_noise": {}}
    for n in sorted({r["noise_rate"] for r in runs}):
        rows = sorted((r for r in runs if r["noise_rate"] == n), key=lambda r: r["p"])
        ps = [r["p"] for r in rows]
        acc = [r["final_test_acc"] for r in rows]
        loss = [r["test_loss"][-1] for r in rows]
        pstar = float(optimal_smoothing(n, k))
        near = int(np.argmin(np.abs(np.asarray(ps) - pstar)))
        out["per_noise"][str(n)] = {
            "p": ps, "final_acc": acc, "final_loss": loss, "best_acc": [r["best_test_acc"] for r in rows],
            "best_epoch": [r["best_epoch"] for r in rows],
            "p_star": pstar, "argmax_acc_p": ps[int(np.argmax(acc))], "argmin_loss_p": ps[int(np.argmin(loss))],
            "acc_at_p_nearest_pstar": acc[near], "p_nearest_pstar": ps[near],
            "acc_at_p1": acc[ps.index(1.0)] if 1.0 in ps else None,
        }
    return out


def plot(results: dict, summary: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_noise"]
    noises = sorted(float(n) for n in per)
    ps = per[str(noises[0])]["p"]
    if len(noises) < 2 or len(ps) < 2 or any(per[str(n)]["p"] != ps for n in noises):
        return  # a heat map needs the same p values on every noise row (the --quick runs are not a grid)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    k = 10 if results["config"]["dataset"] in ("mnist", "cifar10") else 2
    for ax, key, title, best in ((axes[0], "final_acc", "final test accuracy", np.argmax),
                                 (axes[1], "final_loss", "final test CE (clean labels)", np.argmin)):
        grid = np.array([per[str(n)][key] for n in noises])
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                       extent=(ps[0] - 0.05, ps[-1] + 0.05, -0.5, len(noises) - 0.5))
        fig.colorbar(im, ax=ax)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(ps[j], i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if v < grid.mean() else "k")
        ax.scatter([ps[int(best(row))] for row in grid], range(len(noises)), marker="x", color="red",
                   label="best p per noise rate")
        fine = np.linspace(noises[0], noises[-1], 50)
        ax.plot(optimal_smoothing(fine, k), np.interp(fine, noises, range(len(noises))), color="white",
                label="p*(r), r = 1 - n")
        ax.set_yticks(range(len(noises)), [f"{n:g}" for n in noises])
        ax.set_xlabel("p (mass on the observed label)")
        ax.set_ylabel("symmetric noise rate n")
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    fig.suptitle(f"{summary['config']}: {results['config']['dataset']}, {results['config']['subset']} train rows, "
                 f"{results['config']['epochs']} epochs")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


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
            ax.plot(range(1, len(r["test_acc"]) + 1), r["test_acc"], color=cmap(r["p"]), label=f"p={r['p']:g}")
        ax.set_title(f"noise {n}: clean test accuracy")
        ax.set_xlabel("epoch")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=100)
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
    for n, floor in QUICK_MIN_BEST_ACC.get(summary["config"], {}).items():
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

if __name__ == "__main__":
    sys.exit(common.cli(sys.argv[1:], here=HERE, analyse=analyse, check_quick=check_quick))
