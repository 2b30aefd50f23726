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
            row["abstain_auc_at_best_epoch"] = r["abstain_auc"][row["best_epoch"] - 1]
        if r.get("loss_auc"):
            # The authors' other histogram: each training row's loss under its observed label.
            row["loss_auc_final"] = r["loss_auc"][-1]
            row["loss_auc_stop"] = r.get("loss_auc_stop")
            row["loss_auc_at_best_epoch"] = r["loss_auc"][row["best_epoch"] - 1]
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
        axes[0, j].set_title(f"{results['config']['noise_type']} noise {n}: mean training loss")
        axes[1, j].set_title(f"noise {n}: clean test accuracy (dotted: stop epoch)")
        axes[1, j].set_xlabel("epoch")
        axes[0, j].legend(fontsize=7)
        axes[1, j].legend(fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, out_dir / f"{summary['config']}_curves.png", dpi=100)
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
    common.save_figure(fig, out_dir / f"{summary['config']}_abstention.png", dpi=100)
    plt.close(fig)


def analyse(results: dict, out_dir: pathlib.Path) -> dict:
    summary = summarise(results)
    plot(results, summary, out_dir)
    return summary


# Quick budget of mnist_symmetric (2,000 rows, 1,000 test rows, batch 32, 6 epochs, 1 NLL warm-up epoch; NLL and
# gambler's o = 9.9 at n = 0.5 and 0.8), measured at seeds 0 / 1 / 2 (the test runs seed 0):
#   n = 0.8: gain of the stopped gambler's run over final-epoch NLL 0.179 / 0.174 / 0.163, |stop - best epoch|
#            1 / 0 / 0, per-row training-loss ROC-AUC at the stop epoch 0.869 / 0.837 / 0.898 (abstention-score
#            AUC 0.550 / 0.531 / 0.536: not asserted);
#   n = 0.5: abstention-score AUC at the stop epoch 0.600 / 0.584 / 0.616, loss AUC 0.984 / 0.982 / 0.979 (gain
#            0.108 / 0.007 / 0.018 and |stop - best| 2 / 2 / 1: too close to 0 / the limit to assert here).
# Thresholds sit below the smallest of the three seeds.
QUICK_MIN = {
    "mnist_symmetric": {
        "gamblers_o9.9_n0.8": {"gain": 0.10, "max_stop_minus_best": 2, "loss_auc": 0.78},
        "gamblers_o9.9_n0.5": {"abstain_auc": 0.55, "loss_auc": 0.95},
    },
}


def check_quick(summary: dict) -> None:
    """On the CI budget: the stopped gambler's run beats final-epoch NLL, the stop epoch is near the best test epoch,
    and abstention scores / per-row losses separate corrupted from clean training rows (``QUICK_MIN``)."""
    for name, need in QUICK_MIN.get(summary["config"], {}).items():
        row, vs = summary["runs"].get(name), summary["vs_nll"].get(name)
        if row is None or vs is None:
            raise AssertionError(f"{name}: missing, or the early-stopping rule never fired (stop epoch "
                                 f"{None if row is None else row['stop_epoch']})")
        if "gain" in need and not vs["gain"] > need["gain"]:
            raise AssertionError(f"{name}: stopped gambler's accuracy {vs['gamblers_stop_acc']:.3f} vs final NLL "
                                 f"{vs['nll_final_acc']:.3f}: gain {vs['gain']:.3f} <= {need['gain']}")
        lag = abs(row["stop_minus_best_epoch"])
        if "max_stop_minus_best" in need and not lag <= need["max_stop_minus_best"]:
            raise AssertionError(f"{name}: stop epoch {row['stop_epoch']} is {lag} epochs from the best test epoch "
                                 f"{row['best_epoch']} (> {need['max_stop_minus_best']})")
        for key, field in (("abstain_auc", "abstain_auc_stop"), ("loss_auc", "loss_auc_stop")):
            if key in need and not row[field] > need[key]:
                raise AssertionError(f"{name}: {field} (corrupted vs clean training rows) {row[field]:.3f} <= "
                                     f"{need[key]}")


if __name__ == "__main__":
    sys.exit(common.cli(sys.argv[1:], here=HERE, analyse=analyse, check_quick=check_quick))
