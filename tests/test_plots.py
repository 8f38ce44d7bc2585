"""The pictures say what they show: no hidden curve, no overlapping number, smoothed loss apart, both LRs."""
import numpy as np
import pytest

from petalnet import plots
from petalnet.classes import CLASSES
from petalnet.config import TrainConfig
from petalnet.optim import lr_schedule

PETALS_CLASSES = [5, 11, 22, 47, 48, 49, 51, 53, 67, 68, 73, 102]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make, drawn but not written."""
    made = []

    def keep(fig, path):
        fig.canvas.draw()
        made.append(fig)
        return path
    monkeypatch.setattr(plots, "save_figure", keep)
    yield made
    for fig in made:
        plots.plt.close(fig)


def _overlap(a, b, slack=0.5) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


def _legends_clear(fig):
    """Every legend lies outside every plotting area and clear of the axis labels."""
    r = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(r)
        for ax in fig.axes:
            assert not _overlap(box, ax.get_window_extent(r)), ax.get_title()
            assert not _overlap(box, ax.xaxis.label.get_window_extent(r)), ax.get_title()


def _history(epochs=5):
    return [{"epoch": e, "train_loss": 1.2 - 0.1 * e, "val_loss": 0.8 - 0.1 * e, "train_accuracy": 0.5 + 0.08 * e,
             "val_accuracy": 0.55 + 0.07 * e, "val_macro_f1": [0.5, 0.7, 0.8, 0.9, 0.85][e - 1]}
            for e in range(1, epochs + 1)]


def test_curves_keep_smoothed_train_loss_apart_and_mark_the_best_epoch(figures):
    plots.plot_history(_history(), "curves.png", title="t", label_smoothing=0.1, best_epoch=4)
    fig, = figures
    axes = {ax.get_title(): ax for ax in fig.axes}
    smoothed = axes["train loss, label-smoothed (0.1)"]
    assert [ln.get_label() for ln in smoothed.lines if ln.get_label() in ("train", "val")] == ["train"]
    assert [ln.get_label() for ln in axes["val loss"].lines if ln.get_label() in ("train", "val")] == ["val"]
    for ax in fig.axes:   # a dashed line at the best epoch on every panel
        assert any(list(ln.get_xdata()) == [4, 4] for ln in ax.lines), ax.get_title()
    star = [ln for ln in axes["val macro-F1"].lines if ln.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [4] and list(star[0].get_ydata()) == [0.9]
    _legends_clear(fig)


def test_curves_without_smoothing_share_one_loss_panel(figures):
    plots.plot_history(_history(), "curves.png", best_epoch=4)
    axes = {ax.get_title(): ax for ax in figures[0].axes}
    assert {ln.get_label() for ln in axes["loss"].lines} >= {"train", "val"}
    _legends_clear(figures[0])


def test_lr_plot_shows_the_heads_peak(figures):
    schedule = lr_schedule(TrainConfig(epochs=4, lr=1e-3, warmup_epochs=0.5), 1)
    plots.plot_schedule(schedule, 10, "lr.png", head_lr_scale=3.0)
    ax = figures[0].axes[0]
    peaks = sorted(max(ln.get_ydata()) for ln in ax.lines)
    assert peaks == pytest.approx([1e-3, 3e-3])
    assert "head 0.003" in ax.get_title()
    _legends_clear(figures[0])


def test_confusion_numbers_never_overlap(figures):
    rng = np.random.default_rng(0)
    cm = np.zeros((104, 104), dtype=np.int64)
    for i in PETALS_CLASSES:   # every cell of the 12 classes non-zero: the most numbers there can be
        cm[i, PETALS_CLASSES] = rng.integers(1, 9, len(PETALS_CLASSES))
        cm[i, i] = 150
    plots.plot_confusion(cm, CLASSES, "confusion.png", title="val: accuracy 0.9")
    fig = figures[0]
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.texts]
    assert len(boxes) == 144
    cell = ax.get_window_extent(r).width / 12
    assert all(b.width < cell * 0.9 for b in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b, slack=0)


def test_compare_curves_legend_hides_no_curve(figures):
    hist = _history()
    plots.plot_compare_curves({f"run-{k}": hist for k in range(6)}, "curves.png")
    _legends_clear(figures[0])


def test_class_scores_weakest_first_beside_the_distribution(figures):
    rows = [{"class": c, "name": CLASSES[c], "f1": f, "support": n}
            for c, f, n in ((48, 0.95, 130), (5, 0.4, 6), (73, 0.7, 133), (11, 0.55, 10))]
    plots.plot_class_scores(rows, "per_class.png")
    f1_ax, count_ax = figures[0].axes
    names = [t.get_text() for t in f1_ax.get_yticklabels()]
    assert names == ["tiger lily (5)", "colt's foot (11)", "rose (73)", "daisy (48)"]
    assert [round(p.get_width(), 2) for p in f1_ax.patches] == [0.4, 0.55, 0.7, 0.95]
    assert [p.get_width() for p in count_ax.patches] == [6, 10, 133, 130]
