"""Pictures: grids of images with titles (green/red for right/wrong predictions later)."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str) -> str:
    """Write a figure atomically (temp file + rename) and close it."""
    from petalnet.atomic import atomic_path
    try:
        with atomic_path(path, os.path.splitext(path)[1] or ".png") as tmp:
            fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def image_grid(images, titles: list[str], path: str, *, colors: list[str] | None = None,
               ncols: int | None = None, suptitle: str | None = None) -> str:
    """Save uint8 CHW tensors (or HWC arrays) as a grid, each titled, like the tutorial's batch display."""
    n = len(images)
    ncols = ncols or min(n, max(1, round(math.sqrt(n * 1.5))))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = images[k]
        if hasattr(img, "permute"):
            img = img.permute(1, 2, 0).cpu().numpy()
        ax.imshow(img)
        ax.set_title(titles[k], fontsize=9, color=(colors[k] if colors else "black"))
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(h_pad=2.0 if any("\n" in t for t in titles) else None)   # two-line titles
    return save_figure(fig, path)


def _legend_below(ax, ncol: int = 3):
    """The legend under the plot, outside its area, so it never hides a curve."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8, frameon=False)


def plot_history(history: list[dict], path: str, title: str | None = None, *, label_smoothing: float = 0.0,
                 best_epoch: int | None = None) -> str:
    """Loss, accuracy and macro-F1 per epoch, train and validation, the best epoch marked. With label
    smoothing the train loss (against smoothed targets: it cannot fall to 0) is not comparable with
    the validation loss (plain cross-entropy): it gets its own panel and says so."""
    epochs = [h["epoch"] for h in history]
    smoothed = f"train loss, label-smoothed ({label_smoothing:g})"
    panels = ([(smoothed, "train_loss", None), ("val loss", None, "val_loss")] if label_smoothing
              else [("loss", "train_loss", "val_loss")])
    panels += [("accuracy", "train_accuracy", "val_accuracy"), ("val macro-F1", None, "val_macro_f1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), dpi=100)
    for ax, (name, train_key, val_key) in zip(axes, panels):
        for key, label in ((train_key, "train"), (val_key, "val")):
            if key and all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], marker="o", label=label,
                        color="C0" if label == "train" else "C1")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not ax.lines:   # --train-on-val: no validation to show
            ax.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax.transAxes)
            continue
        if best_epoch is not None:
            ax.axvline(best_epoch, color="green", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
            if val_key == "val_macro_f1":
                best = next(h for h in history if h["epoch"] == best_epoch)
                ax.plot([best_epoch], [best[val_key]], marker="*", markersize=15, color="green", linestyle="none")
                ax.annotate(f"{best[val_key]:.4f}", (best_epoch, best[val_key]), textcoords="offset points",
                            xytext=(0, -16), ha="center", fontsize=8, color="green")
        _legend_below(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_schedule(schedule, steps_per_epoch: int, path: str, head_lr_scale: float = 1.0) -> str:
    """The learning rate at every step of a run; with a head LR scale, the head's curve too."""
    xs, ys = schedule.curve(steps_per_epoch)
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=100)
    ax.plot(xs, ys, label=f"body: peak {schedule.peak:g}")
    title = f"{schedule.name}: peak {schedule.peak:g}, {schedule.epochs} epochs"
    if head_lr_scale != 1:
        ax.plot(xs, [y * head_lr_scale for y in ys], label=f"head ({head_lr_scale:g}x): peak "
                                                             f"{schedule.peak * head_lr_scale:g}")
        title = f"{schedule.name}: peak {schedule.peak:g} (head {schedule.peak * head_lr_scale:g}), " \
                f"{schedule.epochs} epochs"
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if head_lr_scale != 1:
        _legend_below(ax, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(cm, class_names: list[str], path: str, title: str | None = None) -> str:
    """Row-normalised confusion matrix over the classes that occur (in labels or predictions); the figure
    grows with the number of classes so 104 names stay readable. Up to 30 classes each non-zero cell
    shows its share in percent, in a cell wide enough for "100" (no number overlaps another)."""
    import numpy as np
    cm = np.asarray(cm, dtype=np.float64)
    keep = np.flatnonzero((cm.sum(1) > 0) | (cm.sum(0) > 0))
    cm = cm[np.ix_(keep, keep)]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(keep)
    numbers = n <= 30
    cell = 0.5 if numbers else 0.25   # inches: a quarter inch a class keeps 104 names legible
    side = max(5.0, cell * n + 3.5)   # + the names, the colorbar
    font = max(7, min(10, 200 // max(n, 1)))
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [f"{class_names[k]} ({k})" for k in keep]
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if numbers:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    share = 100 * norm[i, j]
                    ax.text(j, i, f"{share:.0f}" if share >= 0.5 else "<1", ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title((title + "\n" if title else "confusion matrix\n")
                 + ("% of each true class" if numbers else "rows sum to 1"), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def prediction_grid(images, truths, preds, class_names: list[str], path: str, title: str | None = None) -> str:
    """Images titled 'prediction' (right, green) or 'prediction [should be truth]' (wrong, red), like the
    tutorial's display_batch_of_images."""
    titles, colors = [], []
    for t, p in zip(truths, preds):
        right = t == p
        titles.append(class_names[p] if right else f"{class_names[p]}\n[should be {class_names[t]}]")
        colors.append("green" if right else "red")
    return image_grid(images, titles, path, colors=colors, suptitle=title)


def plot_compare_curves(histories: dict[str, list[dict]], path: str) -> str:
    """Validation macro-F1, validation loss and training loss per epoch, one line per run."""
    keys = [("val_macro_f1", "val macro-F1"), ("val_loss", "val loss"), ("train_loss", "train loss")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    for ax, (key, title) in zip(axes, keys):
        for name, hist in histories.items():
            rows = [h for h in hist if key in h]
            ax.plot([h["epoch"] for h in rows], [h[key] for h in rows], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()   # one legend under all three: it hides no curve
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
    return save_figure(fig, path)


def plot_per_class_f1(scores: dict[str, dict[int, float]], class_names: list[str], path: str) -> str:
    """Grouped horizontal bars: each class's F1 for each run."""
    import numpy as np
    classes = sorted({c for s in scores.values() for c in s})
    n, k = len(classes), max(len(scores), 1)
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.3 * n * k + 1.5)), dpi=100)
    height = 0.8 / k
    for j, (name, s) in enumerate(scores.items()):
        ax.barh(np.arange(n) + j * height, [s.get(c, 0.0) for c in classes], height=height, label=name)
    ax.set_yticks(np.arange(n) + 0.4 - height / 2, [f"{class_names[c]} ({c})" for c in classes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(k, 4), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_class_scores(per_class: list[dict], path: str, title: str | None = None) -> str:
    """Per-class F1, weakest first, beside the number of images of each class (the class distribution
    of the split): a weak class that is also a rare one shows at a glance."""
    rows = sorted(per_class, key=lambda r: (r["f1"], r["support"]))
    n = len(rows)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.32 * n + 1.6)), dpi=100, sharey=True,
                                 gridspec_kw={"width_ratios": [3, 2]})
    ys = range(n)
    ax.barh(ys, [r["f1"] for r in rows], color=[plt.cm.RdYlGn(r["f1"]) for r in rows])
    for y, r in zip(ys, rows):   # the value after the bar, or inside its end where there is no room
        inside = r["f1"] > 0.85
        ax.text(r["f1"] + (-0.01 if inside else 0.01), y, f"{r['f1']:.3f}", va="center", fontsize=8,
                ha="right" if inside else "left", color="white" if inside else "black")
    ax.set_yticks(list(ys), [f"{r['name']} ({r['class']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title("per-class F1, weakest first")
    ax.grid(axis="x", alpha=0.3)
    bx.barh(ys, [r["support"] for r in rows], color="C0")
    top = max([r["support"] for r in rows] + [1])
    for y, r in zip(ys, rows):
        bx.text(r["support"] + top * 0.01, y, str(r["support"]), va="center", fontsize=8)
    bx.set_xlim(0, top * 1.15)
    bx.set_xlabel("images")
    bx.set_title("class distribution (images in the split)")
    bx.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def mistakes_grid(images, mistakes: list[dict], path: str, title: str | None = None) -> str:
    """The most confident mistakes: each image titled with the predicted class and its probability, and
    the true class with the probability the model gave it."""
    titles = [f"{m['predicted_name']} {m['probability']:.2f}\n[true: {m['name']} {m['true_probability']:.2f}]"
              for m in mistakes]
    return image_grid(images, titles, path, colors=["red"] * len(titles), ncols=min(len(titles), 4) or 1,
                      suptitle=title)
