"""``petalnet evaluate``: a run (or ensemble) on a labelled split: metrics, per-class table, confusion
matrix, per-class F1 weakest first beside the class distribution, the most confident mistakes with
their probabilities, and a picture of right and wrong examples, written to one folder."""
from __future__ import annotations

import os

import numpy as np

from petalnet.atomic import write_json
from petalnet.classes import CLASSES
from petalnet.options import TTA_MARGIN
from petalnet.errors import PetalnetError
from petalnet.predict import check_labels, evaluation, predict_dataset, tta_mode

SUMMARY_KEYS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "images")


def default_out(model: str, split: str) -> str:
    """RUN_DIR/eval-SPLIT for a run folder, else eval-SPLIT here."""
    return os.path.join(model, f"eval-{split}") if os.path.isdir(model) else f"eval-{split}"


def evaluate_labelled(predictors, ds, split: str, *, data: str, label_key: str = "class",
                      **predict_kw) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """(``predict.evaluation`` of ``ds``, split ``split`` of ``data``; its probabilities, labels, ids):
    an unlabelled split or labels the models do not have are one-line errors before any prediction."""
    if not ds.labeled:
        raise PetalnetError(f"{data}: split '{split}' is unlabelled (no '{label_key}' feature): "
                            "evaluate needs labels; use `petalnet predict` for a submission")
    labels, ids = ds.metadata()
    check_labels(predictors[0].num_classes, labels, f"{data} ({split})", ds)
    probs, targets = predict_dataset(predictors, ds, **predict_kw)
    return evaluation(probs, targets), probs, targets, ids


def evaluate_split(predictors, ds, split: str, out: str, *, data: str, label_key: str = "class", **predict_kw) -> dict:
    """Predict ``ds`` (split ``split`` of ``data``), write OUT/metrics.json, confusion.png, per_class.png,
    mistakes.png, examples.png; returns the evaluation (``predict.evaluation``) with ``confident_mistakes``."""
    from petalnet.plots import mistakes_grid, plot_class_scores, plot_confusion, prediction_grid
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise PetalnetError(f"{out}: its parent folder does not exist")
    result, probs, targets, ids = evaluate_labelled(predictors, ds, split, data=data, label_key=label_key,
                                                    **predict_kw)
    result["confident_mistakes"] = confident_mistakes(probs, targets, ids)
    os.makedirs(out, exist_ok=True)
    report = {k: v for k, v in result.items() if k != "confusion_matrix"}
    write_json({**report, "split": split, "models": [p.name for p in predictors],
                "tta": tta_mode(predict_kw.get("tta"), predictors),
                "tta_margin": predict_kw.get("tta_margin", TTA_MARGIN)}, os.path.join(out, "metrics.json"))
    plot_confusion(result["confusion_matrix"], CLASSES, os.path.join(out, "confusion.png"),
                   title=f"{split}: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    plot_class_scores(result["per_class"], os.path.join(out, "per_class.png"),
                      title=f"{split}: macro-F1 {result['macro_f1']:.3f}")
    if result["confident_mistakes"]:
        mistakes_grid([ds.load(m["index"])[0] for m in result["confident_mistakes"]], result["confident_mistakes"],
                      os.path.join(out, "mistakes.png"), title=f"{split}: the most confident mistakes")
    picks = example_picks(probs.argmax(1), targets)
    prediction_grid([ds.load(i)[0] for i in picks], [int(targets[i]) for i in picks],
                    [int(probs[i].argmax()) for i in picks], CLASSES, os.path.join(out, "examples.png"),
                    title=f"{split}: right (green) and wrong (red)")
    return result


def confident_mistakes(probs: np.ndarray, targets: np.ndarray, ids: list[str], k: int = 12) -> list[dict]:
    """The ``k`` wrong predictions made with the highest probability, most confident first: record index,
    id, true and predicted class, the predicted probability and the one the true class got."""
    preds = probs.argmax(1)
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:k]
    return [{"index": int(i), "id": ids[i], "label": int(targets[i]), "name": _name(targets[i]),
             "predicted": int(preds[i]), "predicted_name": _name(preds[i]), "probability": float(probs[i, preds[i]]),
             "true_probability": float(probs[i, targets[i]])} for i in wrong]


def _name(c) -> str:
    return CLASSES[c] if c < len(CLASSES) else str(int(c))


def example_picks(preds: np.ndarray, targets: np.ndarray, wrong_at_most: int = 12, total: int = 24) -> list[int]:
    """Indices to picture: the first wrong predictions (up to ``wrong_at_most``), then right ones."""
    wrong = np.flatnonzero(preds != targets)[:wrong_at_most].tolist()
    right = np.flatnonzero(preds == targets)[: total - len(wrong)].tolist()
    return sorted(wrong + right)


def format_evaluation(split: str, result: dict, out: str) -> str:
    lines = [f"{split}: {result['images']} images, accuracy {result['accuracy']:.4f}, macro-F1 "
             f"{result['macro_f1']:.4f}, macro precision {result['macro_precision']:.4f}, macro recall "
             f"{result['macro_recall']:.4f}",
             f"  {'class':<32} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    lines += [f"  {row['class']:>3} {row['name']:<28} {row['precision']:>9.3f} {row['recall']:>7.3f} "
              f"{row['f1']:>7.3f} {row['support']:>8}" for row in sorted(result["per_class"], key=lambda r: r["f1"])]
    mistakes = result.get("confident_mistakes") or []
    if mistakes:
        lines.append("  most confident mistakes (id: predicted p [true p]):")
        lines += [f"    {m['id']}: {m['predicted_name']} {m['probability']:.3f} [{m['name']} {m['true_probability']:.3f}]"
                  for m in mistakes[:5]]
    return "\n".join(lines + [f"wrote {out}/metrics.json, confusion.png, per_class.png, mistakes.png, examples.png"])
