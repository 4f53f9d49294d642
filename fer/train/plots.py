"""The paper's figures: accuracy/loss against epoch (figs 4, 6) and confusion matrices (figs 5, 7)."""

import numpy as np
from matplotlib.artist import setp
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Figures are made without pyplot: they go to files and TensorBoard only, need no display and no
# backend choice, so importing this module changes no global matplotlib state.


def _subplots(*grid, figsize, dpi, **kwargs):
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*grid, **kwargs)


def confusion_figure(counts, class_names, title: str = "Confusion matrix"):
    """Row-normalised (per true class) confusion matrix with counts in each cell."""
    counts = np.asarray(counts, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = _subplots(figsize=(6.4, 5.6), dpi=100)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    n = len(class_names)
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    setp(ax.get_xticklabels(), rotation=35, ha="right")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({counts[i, j]})",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict], title: str = ""):
    """Accuracy and loss per epoch, train and validation, side by side."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, (acc, loss) = _subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key in ((acc, "acc"), (loss, "loss")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [h.get(f"{split}/{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(
                    epochs,
                    [np.nan if y is None else y for y in ys],
                    style,
                    ms=3,
                    label="train" if split == "train" else "validation",
                )
        ax.set(xlabel="epoch", ylabel="accuracy" if key == "acc" else "cross-entropy loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig, path):
    fig.savefig(path)


def reliability_figure(before: dict, after: dict, title: str = ""):
    """Accuracy against confidence, per confidence bin, before and after temperature scaling.

    `before`/`after` come from fer.train.calibration.reliability. Bars on the diagonal are perfectly
    calibrated; the hatched part is each bin's gap; the grey line is the share of faces per bin.
    """
    fig, axes = _subplots(1, 2, figsize=(9.6, 4.2), dpi=100, sharey=True)
    for ax, r, name in zip(axes, (before, after), ("as trained", "temperature-scaled")):
        count = np.asarray(r["count"], dtype=float)
        acc, conf = np.asarray(r["accuracy"]), np.asarray(r["confidence"])
        n = len(count)
        left = np.arange(n) / n
        has = count > 0
        ax.bar(left[has], acc[has], width=1 / n, align="edge", color="tab:blue", edgecolor="black", lw=0.5, label="accuracy")
        ax.bar(
            left[has],
            (conf - acc)[has],
            bottom=acc[has],
            width=1 / n,
            align="edge",
            color="tab:red",
            alpha=0.35,
            hatch="//",
            edgecolor="tab:red",
            lw=0.5,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(left + 0.5 / n, count / max(count.sum(), 1), color="grey", lw=1, label="share of faces")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class probability)", title=f"{name}: ECE {r['ece']:.1%}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def sweep_figure(jobs: dict[str, dict], class_names: list[str], title: str = "", val: str = "validation", test: str = "test"):
    """A sweep at a glance: each job's validation accuracy per epoch, and its test recall per class.

    `jobs` maps a job's label to {"history": [...], "recall": {class: recall}} (from metrics.json).
    """
    fig, (curves, bars) = _subplots(1, 2, figsize=(11, 4.2), dpi=100)
    width = 0.8 / max(len(jobs), 1)
    x = np.arange(len(class_names))
    for i, (label, job) in enumerate(jobs.items()):
        history = [h for h in job["history"] if "val/acc" in h]
        curves.plot([h["epoch"] + 1 for h in history], [h["val/acc"] for h in history], "-o", ms=3, label=label)
        bars.bar(x + (i - (len(jobs) - 1) / 2) * width, [job["recall"].get(c, 0.0) for c in class_names], width, label=label)
    curves.set(xlabel="epoch", ylabel=f"{val} accuracy")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set(xticks=x, xticklabels=class_names, ylabel=f"{test} recall", ylim=(0, 1))
    setp(bars.get_xticklabels(), rotation=35, ha="right")
    for ax in (curves, bars):
        ax.grid(alpha=0.3)
    # one legend for both panels, below them, where it hides no curve and no bar
    rows = -(-len(jobs) // 3)
    fig.legend(*bars.get_legend_handles_labels(), loc="lower center", ncol=min(len(jobs), 3), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 * rows, 1, 1))
    return fig
