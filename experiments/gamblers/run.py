"""Gambler's loss vs NLL vs smoothed CE under label noise, with the analytical early-stopping rule.

Usage (from the repository root)::

    .venv/bin/python experiments/gamblers/run.py            # all configs/*.json
    .venv/bin/python experiments/gamblers/run.py --quick    # CI budget, asserts the measured direction

Writes ``results[_quick]/<config>.json`` (per-epoch histories, abstention histograms), ``<config>_summary.json``,
``<config>_curves.png`` (training loss with the L* line and the stop epoch; clean test accuracy) and
``<config>_abstention.png`` (abstention-score histograms of clean vs corrupted training rows).
"""
from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from experiments import common  # noqa: E402


def summarise(results: dict) -> dict:
    out = {"config": results["config"]["name"], "wall_s": results["wall_s"], "runs": {}}
    for r in results["runs"]:
        row = {k: r.get(k) for k in ("loss", "noise_rate", "p", "payoff", "final_test_acc", "best_test_acc",
                                     "best_epoch", "stop_threshold", "stop_epoch", "stop_test_acc")}
        if r["abstain_auc"]:
            row["abstain_auc_final"] = r["abstain_auc"][-1]
            row["abstain_auc_stop"] = r.get("abstain_stop", {}).get("auc")
            row["abstain_auc_max"] = float(np.nanmax(r["abstain_auc"]))
        if r.get("stop_epoch") is not None:
            row["stop_minus_best_epoch"] = r["stop_epoch"] - r["best_epoch"]
        out["runs"][r["name"]] = row
    # Gambler's (stopped) vs NLL (final) per noise rate: the paper's headline comparison.
    out["vs_nll"] = {}
    for r in results["runs"]:
        if r["loss"] == "gamblers" and r.get("stop_test_acc") is not None:
            nll = [x for x in results["runs"] if x["loss"] == "ce" and x["noise_rate"] == r["noise_rate"]]
            if nll:
                out["vs_nll"][r["name"]] = {"gamblers_stop_acc": r["stop_test_acc"],
                                            "gamblers_final_acc": r["final_test_acc"],
                                            "nll_final_acc": nll[0]["final_test_acc"],
                                            "gain": r["stop_test_acc"] - nll[0]["final_test_acc"]}
    return out


def plot(results: dict, summary: dict, out_dir: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    noises = sorted({r["noise_rate"] for r in runs})
    fig, axes = plt.subplots(2, len(noises), figsize=(5.5 * len(noises), 7.5), squeeze=False)
    for j, n in enumerate(noises):
        for r in (x for x in runs if x["noise_rate"] == n):
            epochs = np.arange(1, len(r["train_loss"]) + 1)
            line, = axes[0, j].plot(epochs, r["train_loss"], label=r["name"])
            axes[1, j].plot(epochs, r["test_acc"], color=line.get_color(), label=r["name"])
            if r.get("stop_threshold") is not None:
                axes[0, j].axhline(r["stop_threshold"], color=line.get_color(), ls="--", lw=1,
                                   label=f"L* = {r['stop_threshold']:.3f}")
                if r.get("stop_epoch"):
                    for ax in axes[:, j]:
                        ax.axvline(r["stop_epoch"], color=line.get_color(), ls=":", lw=1)
        axes[0, j].set_title(f"symmetric noise {n}: mean training loss")
        axes[1, j].set_title(f"noise {n}: clean test accuracy (dotted: stop epoch)")
        axes[1, j].set_xlabel("epoch")
        axes[0, j].legend(fontsize=7)
        axes[1, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{summary['config']}_curves.png", dpi=100)
    plt.close(fig)

    gam = [r for r in runs if r.get("abstain_final")]
    if not gam:
        return
    fig, axes = plt.subplots(len(gam), 2, figsize=(10, 2.6 * len(gam)), squeeze=False)
    edges = np.linspace(0, 1, 21)
    for i, r in enumerate(gam):
        for j, tag in enumerate(("stop", "final")):
            h = r.get(f"abstain_{tag}")
            ax = axes[i, j]
            for kind, color in (("clean", "tab:blue"), ("corrupted", "tab:red")):
                counts = np.asarray(h[kind], float)
                ax.stairs(counts / max(counts.sum(), 1), edges, color=color, label=kind)
            label = f"epoch {r.get('stop_epoch')}" if tag == "stop" and r.get("stop_epoch") else tag
            ax.set_title(f"{r['name']} ({label}): ROC-AUC {h['auc']:.3f}", fontsize=9)
            ax.set_xlabel("abstention score p_(m+1)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / f"{summary['config']}_abstention.png", dpi=100)
    plt.close(fig)


def analyse(results: dict, out_dir: pathlib.Path) -> dict:
    summary = summarise(results)
    plot(results, summary, out_dir)
    return summary


# Measured on the quick budget (seed 0, 2,000 rows, 8 epochs, n = 0.5): stopped gambler's 0.911 vs final NLL 0.873
# (gain 0.038), abstention AUC at the stop epoch 0.635, stop epoch 5 = best epoch 5. Margins about half of that.
QUICK_MIN = {"gain": 0.02, "auc": 0.58, "max_stop_minus_best": 2}
QUICK_CHECKED = ("mnist_symmetric",)


def check_quick(summary: dict) -> None:
    """On the CI budget: gambler's at its stop epoch beats final-epoch NLL; abstention separates corrupted rows."""
    if summary["config"] not in QUICK_CHECKED:
        return  # smoke-run only: the auto-payoff follow-up, the CIFAR-10 points (2 epochs in quick mode)
    if not summary["vs_nll"]:
        raise AssertionError("the early-stopping rule never fired for a gambler's run (no stop epoch)")
    for name, row in summary["vs_nll"].items():
        if not row["gain"] > QUICK_MIN["gain"]:
            raise AssertionError(f"{name}: stopped gambler's accuracy {row['gamblers_stop_acc']:.3f} vs final NLL "
                                 f"{row['nll_final_acc']:.3f}: gain {row['gain']:.3f} <= {QUICK_MIN['gain']}")
        lag = abs(summary["runs"][name]["stop_minus_best_epoch"])
        if not lag <= QUICK_MIN["max_stop_minus_best"]:
            raise AssertionError(f"{name}: stop epoch is {lag} epochs from the best test epoch "
                                 f"(> {QUICK_MIN['max_stop_minus_best']})")
        auc = summary["runs"][name]["abstain_auc_stop"]
        if not auc > QUICK_MIN["auc"]:
            raise AssertionError(f"{name}: abstention ROC-AUC (corrupted vs clean) {auc:.3f} <= {QUICK_MIN['auc']}")


if __name__ == "__main__":
    sys.exit(common.cli(sys.argv[1:], here=HERE, analyse=analyse, check_quick=check_quick))
