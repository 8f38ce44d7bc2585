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
    fig.tight_layout()
    return save_figure(fig, path)


def plot_history(history: list[dict], path: str, title: str | None = None) -> str:
    """Loss, accuracy and macro-F1 per epoch, train and validation."""
    epochs = [h["epoch"] for h in history]
    panels = [("loss", "train_loss", "val_loss"), ("accuracy", "train_accuracy", "val_accuracy"),
              ("macro-F1", None, "val_macro_f1")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=100)
    for ax, (name, train_key, val_key) in zip(axes, panels):
        for key, label in ((train_key, "train"), (val_key, "val")):
            if key and all(key in h for h in history):
                ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:   # --train-on-val: no validation to show
            ax.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_schedule(schedule, steps_per_epoch: int, path: str) -> str:
    """The learning rate at every step of a run."""
    xs, ys = schedule.curve(steps_per_epoch)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(xs, ys)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{schedule.name}: peak {schedule.peak:g}, {schedule.epochs} epochs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(cm, class_names: list[str], path: str, title: str | None = None) -> str:
    """Row-normalised confusion matrix over the classes that occur (in labels or predictions); the figure
    grows with the number of classes so 104 names stay readable."""
    import numpy as np
    cm = np.asarray(cm, dtype=np.float64)
    keep = np.flatnonzero((cm.sum(1) > 0) | (cm.sum(0) > 0))
    cm = cm[np.ix_(keep, keep)]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(keep)
    side = max(5.0, 0.25 * n + 3)   # a quarter inch a class keeps 104 names legible
    font = max(7, min(10, 200 // max(n, 1)))
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [f"{class_names[k]} ({k})" for k in keep]
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=font - 1,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or "confusion matrix (rows sum to 1)")
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
    axes[0].legend(fontsize=8)
    fig.tight_layout()
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
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
