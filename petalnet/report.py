"""Self-contained HTML reports (images embedded) for a run and for a comparison of runs."""
from __future__ import annotations

import base64
import glob
import html
import json
import os

from petalnet.atomic import write_text as write_html

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
pre{background:#f7f7f7;padding:1em;overflow:auto}h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}"""


def _img(path: str, alt: str) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode()
    return f'<h2>{html.escape(alt)}</h2><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format(r.get(k, ''), fmt) if r.get(k) is not None else '')}</td>"
                                    for k, _, fmt in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, subtitle: str, parts: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='sub'>{html.escape(subtitle)}</p>{''.join(parts)}</body></html>")


def run_report(run_dir: str, eval_dir: str | None, path: str, finished: tuple | None = None) -> str:
    """config, curves, LR, metrics, per-class table, confusion matrix and examples of one run
    (``finished``: ``rundir.read_finished(run_dir)``, when already read)."""
    from petalnet.rundir import read_finished
    summary, history, config = finished or read_finished(run_dir)
    parts = ["<h2>Summary</h2>", _table([summary], [
        ("model", "model", ""), ("image_size", "image size", "d"), ("epochs", "epochs", "d"),
        ("best_epoch", "best epoch", "d"), ("best_val_macro_f1", "best val macro-F1", ".4f"),
        ("best_val_accuracy", "best val accuracy", ".4f"), ("wall_seconds", "run wall s", ".0f"),
        ("train_seconds", "epochs s", ".0f"), ("train_images_per_second", "train img/s", ".0f")])]
    parts += ["<h2>History</h2>", _table(history, [
        ("epoch", "epoch", "d"), ("lr", "lr", ".2e"), ("train_loss", "train loss", ".4f"),
        ("train_accuracy", "train acc", ".4f"), ("val_loss", "val loss", ".4f"), ("val_accuracy", "val acc", ".4f"),
        ("val_macro_f1", "val macro-F1", ".4f"), ("seconds", "s", ".0f")])]
    parts.append(_img(os.path.join(run_dir, "curves.png"), "Training curves"))
    parts.append(_img(os.path.join(run_dir, "lr.png"), "Learning rate"))
    if eval_dir and os.path.isfile(os.path.join(eval_dir, "metrics.json")):
        with open(os.path.join(eval_dir, "metrics.json")) as fh:
            m = json.load(fh)
        parts += [f"<h2>Evaluation on {html.escape(m.get('split', ''))}</h2>", _table([m], [
            ("images", "images", "d"), ("accuracy", "accuracy", ".4f"), ("macro_f1", "macro-F1", ".4f"),
            ("macro_precision", "macro precision", ".4f"), ("macro_recall", "macro recall", ".4f")]),
            "<p>Per class, weakest F1 first:</p>",
            _table(sorted(m["per_class"], key=lambda r: r["f1"]), [
                ("class", "class", "d"), ("name", "name", ""), ("precision", "precision", ".3f"),
                ("recall", "recall", ".3f"), ("f1", "F1", ".3f"), ("support", "support", "d")])]
        parts.append(_img(os.path.join(eval_dir, "per_class.png"), "Per-class F1 (weakest first) and the class "
                                                                   "distribution"))
        parts.append(_img(os.path.join(eval_dir, "confusion.png"), "Confusion matrix"))
        if m.get("confident_mistakes"):
            parts += ["<h2>The most confident mistakes</h2>", _table(m["confident_mistakes"], [
                ("id", "id", ""), ("predicted_name", "predicted", ""), ("probability", "its probability", ".3f"),
                ("name", "true class", ""), ("true_probability", "true class's probability", ".3f")])]
            parts.append(_img(os.path.join(eval_dir, "mistakes.png"), "The most confident mistakes: predicted "
                                                                      "(probability) [true class (probability)]"))
        parts.append(_img(os.path.join(eval_dir, "examples.png"), "Examples: right (green) and wrong (red)"))
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=1))}</pre>"]
    return write_html(_page(f"petalnet run: {os.path.basename(os.path.abspath(run_dir))}",
                            f"{summary['model']} at {summary['image_size']} px", parts), path)


def compare_report(rows: list[dict], images: list[tuple[str, str]], path: str) -> str:
    parts = ["<h2>Models</h2>", _table(rows, COMPARE_COLUMNS)] + [_img(p, title) for p, title in images]
    return write_html(_page("petalnet comparison", f"{len(rows)} runs", parts), path)


COMPARE_COLUMNS = [("run", "run", ""), ("model", "model", ""), ("parameters", "parameters", ","),
                   ("image_size", "image size", "d"), ("epochs", "epochs", "d"),
                   ("best_val_macro_f1", "best val macro-F1", ".4f"), ("best_val_accuracy", "val accuracy", ".4f"),
                   ("train_seconds", "train s (wall, caching included)", ".0f"),
                   ("train_images_per_second", "train img/s", ".0f"),
                   ("inference_images_per_second", "inference img/s (after a warm-up)", ".0f")]


def report_run(run_dir: str, path: str, eval_dir: str | None = None, data: str | None = None) -> tuple[str, dict | None]:
    """``petalnet report``: (the HTML page written, the evaluation when one was run for it). A run not
    yet evaluated is evaluated first on its data's val split (into RUN_DIR/eval-val), so the page has
    the confusion matrix and examples."""
    from petalnet.outputs import refuse_inputs, run_files
    from petalnet.rundir import read_finished
    finished = read_finished(run_dir)   # an unfinished folder: one line before any evaluation
    eval_dir = eval_dir or os.path.join(run_dir, "eval-val")
    read = [f for f in run_files(run_dir) if os.path.basename(f) != "report.html"]   # the page it replaces
    refuse_inputs("--output", path, read + glob.glob(os.path.join(glob.escape(eval_dir), "*")))
    result = None
    if not os.path.isdir(eval_dir):
        data = data or finished[2].get("data")
        if data:
            from petalnet.evaluate import evaluate_split
            from petalnet.predict import inference_split, load_predictor, resolve_device
            device = resolve_device("auto")
            predictor = load_predictor(run_dir, device)
            split, ds = inference_split(data, None, "val", model_size=predictor.image_size)
            result = evaluate_split([predictor], ds, split, eval_dir, data=data, device=device)
    return run_report(run_dir, eval_dir, path, finished), result
