"""Pictures: grids of images with titles (green/red for right/wrong predictions later)."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str) -> str:
    """Write a figure atomically (temp file + rename) and close it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        from petalnet.errors import PetalnetError
        raise PetalnetError(f"{path}: folder {folder} does not exist")
    root, ext = os.path.splitext(path)
    tmp = f"{root}.{os.getpid()}.tmp{ext or '.png'}"
    try:
        fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
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
        ax.legend()
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
