"""Inference: load trained runs, predict splits or photos (with TTA and ensembles), evaluate, submit."""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import torch
import torch.nn.functional as F

from petalnet import checkpoint, metrics
from petalnet.atomic import atomic_path
from petalnet.accel import DevicePreprocess, cpu_supports_bf16, keep_freed_memory
from petalnet.augment import tta_view
from petalnet.classes import CLASSES
from petalnet.commands import InferenceOptions, check_weights
from petalnet.data.images import MAX_PIXELS  # serve imports it from here
from petalnet.data.photo import load_photo  # predict PHOTO; serve and the tests import it from here
from petalnet.data.loader import create_loader
from petalnet.errors import OptionError, PetalnetError
from petalnet.inference import CPUInferenceModel
from petalnet.outputs import refuse_inputs, run_files, same_file
from petalnet.models import create_model
from petalnet.options import INFERENCE_PRECISIONS, PRECISIONS, TTA_MARGIN, TTA_MODES, TTA_VIEWS


def tta_mode(tta: bool | str | None, predictors: list[Predictor] | None = None) -> str:
    """None: what the (first) run was trained and validated with; True/False: 'full'/'none'."""
    if tta is None:
        return predictors[0].tta if predictors else "none"
    if isinstance(tta, bool):
        return "full" if tta else "none"
    if tta not in TTA_MODES:
        raise OptionError(f"--tta {tta}: choose {', '.join(TTA_MODES)}")
    return tta


@dataclasses.dataclass
class Predictor:
    name: str
    model: torch.nn.Module            # or an OnnxModel: anything mapping a float NCHW batch to logits
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple
    model_name: str = ""
    tta: str = "none"                 # the views the run was validated with: predict's default
    trained_bf16: bool = False        # trained under bf16 autocast: --precision auto runs it in bf16 where fast
    cpu_models: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # by bf16: see inference_model


def resolve_device(name: str = "auto") -> torch.device:
    """Where inference runs: 'auto' is the first CUDA GPU when one is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PetalnetError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise PetalnetError(f"--device {name}: inference runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PetalnetError(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise PetalnetError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return device


def load_predictor(path: str, device: torch.device | None = None) -> Predictor:
    """A RUN_DIR (its best checkpoint), a checkpoint file or an exported .onnx file, ready to predict."""
    if str(path).endswith(".onnx"):
        from petalnet.onnx_model import OnnxModel
        m = OnnxModel(path)
        return Predictor(path, m, m.num_classes, m.image_size, m.mean, m.std, m.model_name, m.tta)
    file = os.path.join(path, "checkpoints", "best.pt") if os.path.isdir(path) else path
    state = checkpoint.load_model(file)
    model, _ = create_model(state["model_name"], state["num_classes"], pretrained=False)
    checkpoint.load_weights(model, state["model"], file, f"{state['model_name']} with {state['num_classes']} classes")
    model = model.to(device or torch.device("cpu"), memory_format=torch.channels_last).eval()
    config = state.get("config")
    return Predictor(path, model, state["num_classes"], state["image_size"], tuple(state["mean"]), tuple(state["std"]),
                     state["model_name"], state.get("tta", "none"),
                     trained_bf16=isinstance(config, dict) and config.get("precision") == PRECISIONS["bf16"])


def inference_precision(precision: str, device: torch.device, predictors=()) -> str:
    """'32' or 'bf16' for ``--precision`` on ``device``. 'auto': bf16 autocast on a CUDA GPU; on a CPU, bf16
    where every model was trained under bf16 autocast and the CPU runs bf16 natively (AMX/AVX512-BF16), else
    float32. A model trained in bf16 was validated in bf16 (its frozen part runs in bf16 in training's
    cache pass), and bf16 predicts it 1.9x as fast here (benchmarks/bench_accuracy.py); float32 (``32``)
    gives the labels of its ONNX export exactly. bf16 with an ONNX model (float32 in onnxruntime) is an
    OptionError."""
    if precision not in INFERENCE_PRECISIONS:
        raise OptionError(f"--precision {precision}: choose {', '.join(INFERENCE_PRECISIONS)}")
    from petalnet.onnx_model import OnnxModel
    if precision == "bf16" and any(isinstance(p.model, OnnxModel) for p in predictors):
        raise OptionError("--precision bf16: an ONNX model runs in float32 (onnxruntime); use auto or 32")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16"
        trained_bf16 = bool(predictors) and all(p.trained_bf16 for p in predictors)
        return "bf16" if trained_bf16 and cpu_supports_bf16() else "32"
    return precision


def _autocast(device: torch.device, precision: str):
    """bf16 autocast (``precision`` 'bf16', as resolved by ``inference_precision``), or none ('32')."""
    return torch.autocast("cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def inference_model(p: Predictor, device: torch.device, precision: str):
    """What runs ``p``'s forward: on a CPU, a ``CPUInferenceModel`` (prepared once per predictor and
    precision, ~0.15 s for Lite0; bf16 weights for 'bf16'), elsewhere the model itself (under autocast)."""
    if device.type != "cpu" or not isinstance(p.model, torch.nn.Module):
        return p.model
    bf16 = inference_precision(precision, device, [p]) == "bf16"
    if bf16 not in p.cpu_models:
        keep_freed_memory()
        p.cpu_models[bf16] = CPUInferenceModel(p.model, p.image_size, bf16)
    return p.cpu_models[bf16]


def unsure(probs: torch.Tensor, margin: float) -> torch.Tensor:
    """Indices of the rows of ``probs`` whose two largest probabilities are less than ``margin`` apart
    (every row for a margin of 1 or more)."""
    top2 = probs.topk(2, dim=1).values if probs.shape[1] > 1 else F.pad(probs, (0, 1))
    return ((top2[:, 0] - top2[:, 1] < margin) | (margin >= 1)).nonzero().flatten()


@torch.inference_mode()
def predict_batches(predictors: list[Predictor], batches, *, tta: bool | str | None = None,
                    weights: list[float] | None = None, device: torch.device | None = None,
                    precision: str = "auto", tta_margin: float = TTA_MARGIN):
    """Yield (probabilities (B, C), targets) per uint8 batch: softmax averaged over the ensemble, weighted
    by ``weights``, and over the TTA views for the images the first view leaves unsure (``unsure``; a
    ``tta_margin`` of 1 or more: every image)."""
    device = device or torch.device("cpu")
    classes = {p.num_classes for p in predictors}
    if len(classes) > 1:
        raise PetalnetError("ensemble members have different numbers of classes: "
                            + ", ".join(f"{p.name}: {p.num_classes}" for p in predictors))
    check_weights(weights, len(predictors))   # the library's callers too: the rules of the declarations
    InferenceOptions.check_value("tta_margin", tta_margin)
    w = torch.tensor(weights or [1.0] * len(predictors), dtype=torch.float64)
    w = (w / w.sum()).tolist()
    precision = inference_precision(precision, device, predictors)
    preps = [DevicePreprocess(device, p.mean, p.std, p.image_size) for p in predictors]
    first, *extra = TTA_VIEWS[tta_mode(tta, predictors)]
    models = [inference_model(p, device, precision) for p in predictors]

    def ensemble(xs, views):
        """Sum over ``views`` of the weighted ensemble's probabilities."""
        total = 0
        for model, x, weight in zip(models, xs, w):
            for view in views:
                with _autocast(device, precision):
                    total = total + F.softmax(model(tta_view(x, view)).float(), dim=1).double() * weight
        return total

    for images, targets in batches:
        xs = [prep(images) for prep in preps]
        total = ensemble(xs, [first])
        rows = unsure(total, tta_margin) if extra else ()
        if len(rows) == len(total):   # every image (--tta-margin 1): no copy of the batch
            total = (total + ensemble(xs, extra)) / (1 + len(extra))
        elif len(rows):
            total[rows] = (total[rows] + ensemble([x[rows] for x in xs], extra)) / (1 + len(extra))
        yield total.cpu(), targets


def predict_dataset(predictors, dataset, *, batch_size: int = 64, tta: bool | str | None = None, weights=None,
                    workers: int | None = None, progress=None, precision: str = "auto",
                    device: torch.device | None = None, tta_margin: float = TTA_MARGIN):
    """(probabilities (N, C) float64, targets: int64 labels or list of ids) over a whole dataset, in order.
    ``workers``: loader processes; None: on a CPU one loader thread of this process (the model needs
    the cores), on a GPU up to 8 processes. ``device``: where the predictors' models are (CPU default)."""
    device = device or torch.device("cpu")
    if not len(dataset):
        paths = getattr(dataset, "paths", ["the data"])
        raise PetalnetError(f"no readable records in {paths[0]}" + (f" and {len(paths) - 1} more file(s)"
                                                                   if len(paths) > 1 else ""))
    if workers is None and device.type == "cuda":
        workers = min(8, os.cpu_count() or 1)
    loader = create_loader(dataset, batch_size, num_workers=workers or 0, threads=0 if workers else 1,
                           pin_memory=device.type == "cuda", background=device.type == "cpu")
    batches = progress(loader, total=len(loader), desc="predict", unit="batch") if progress else loader
    probs, targets = [], []
    for p, t in predict_batches(predictors, batches, tta=tta, weights=weights, precision=precision,
                                device=device, tta_margin=tta_margin):
        probs.append(p)
        targets += t.tolist() if torch.is_tensor(t) else list(t)
    return torch.cat(probs).numpy(), (np.asarray(targets, np.int64) if dataset.labeled else targets)


def check_labels(predictor_classes: int, labels: np.ndarray, where: str, dataset=None) -> None:
    """Labels must index the model's classes; ``dataset`` (the TFRecordImages they came from) names the
    first record outside the competition's classes (a negative class crashed ``bincount``)."""
    if dataset is not None:
        dataset.check_labels(labels)
    if len(labels) and labels.min() < 0:
        raise PetalnetError(f"{where}: labels go down to {labels.min()}: class indices start at 0")
    if len(labels) and labels.max() >= predictor_classes:
        raise PetalnetError(f"{where}: labels go up to {labels.max()}, but the model has {predictor_classes} "
                            "classes: it was trained for other data")


def evaluation(probs: np.ndarray, labels: np.ndarray) -> dict:
    """The metrics a competitor reads, plus the per-class table and the confusion matrix."""
    preds = probs.argmax(1)
    cm = metrics.confusion_matrix(torch.from_numpy(labels), torch.from_numpy(preds), probs.shape[1])
    summary = metrics.summary(cm)
    pc = metrics.per_class(cm)
    present = ((pc["support"] > 0) | (pc["predicted"] > 0)).nonzero().flatten().tolist()
    table = [{"class": c, "name": CLASSES[c] if c < len(CLASSES) else str(c),
              "precision": pc["precision"][c].item(), "recall": pc["recall"][c].item(),
              "f1": pc["f1"][c].item(), "support": int(pc["support"][c].item())} for c in present]
    return {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
            "macro_precision": summary["macro_precision"], "macro_recall": summary["macro_recall"],
            "images": int(len(labels)), "per_class": table, "confusion_matrix": cm.numpy()}


def write_submission(path: str, ids: list[str], labels: np.ndarray) -> None:
    """``id,label`` rows, written to a temp file and renamed: never a half-written CSV."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label"])
        w.writerows(zip(ids, (int(v) for v in labels)))


def top_entries(probs: torch.Tensor, k: int) -> list[tuple[int, str, float]]:
    values, idx = probs.topk(min(k, probs.shape[-1]))
    return [(int(i), CLASSES[int(i)] if int(i) < len(CLASSES) else str(int(i)), float(v)) for v, i in zip(values, idx)]


def top_k(predictors, photo_paths: list[str], k: int = 5, tta: bool | str | None = None, weights=None,
          device: torch.device | None = None, precision: str = "auto", tta_margin: float = TTA_MARGIN):
    """Per photo: (path, [(class, name, probability), ...]) or (path, PetalnetError)."""
    size = max(p.image_size for p in predictors)
    results = []
    for path in photo_paths:
        try:
            img = load_photo(path, size)
        except PetalnetError as e:
            results.append((path, e))
            continue
        (probs, _), = predict_batches(predictors, [(img[None], [path])], tta=tta, weights=weights, device=device,
                                      precision=precision, tta_margin=tta_margin)
        results.append((path, top_entries(probs[0], k)))
    return results


def inference_split(data: str, split: str | None, default_split: str, *, image_size: int | None = None,
                    labeled: bool | None = None, skip_bad: bool = False, image_key: str = "image",
                    label_key: str = "class", id_key: str = "id", model_size: int | None = None):
    """(split name, dataset) to predict or evaluate: ``split``, else the only one, else ``default_split``.
    ``image_size`` picks the stored size (``discovery.discover``); without it, several stored sizes are
    chosen from by ``model_size`` (the size the model runs at). A size read instead of the one asked for
    is one warning line. Remote files are read once each, in order, into local copies (``mirror``)."""
    import warnings

    from petalnet.data.dataset import TFRecordImages
    from petalnet.data.discovery import discover, resampled_from
    from petalnet.data.mirror import local_copies
    src = discover(data, image_size, model_size)
    if src.note and image_size and src.image_size and model_size not in (None, image_size):
        src.note = resampled_from(src.root, src.image_size, image_size, src.stored_sizes, to=model_size)
    if src.note:
        warnings.warn(src.note, stacklevel=2)
    name = split or (next(iter(src.splits)) if len(src.splits) == 1 else default_split)
    ds = TFRecordImages(local_copies(src.split(name)), image_size=src.image_size, labeled=labeled, skip_bad=skip_bad,
                        image_key=image_key, label_key=label_key, id_key=id_key)
    return name, ds


def submit(predictors, dataset, output: str, *, probs_path: str | None = None, **predict_kw) -> list[str]:
    """``petalnet predict --data``: write ``output`` (submission.csv: id,label) and, when asked, the
    probabilities (``probs_path``, .npz with the ids); returns the ids. The folders are checked before
    the slow part."""
    for path in filter(None, (output, probs_path)):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise PetalnetError(f"{path}: folder {os.path.dirname(os.path.abspath(path))} does not exist")
    inputs = [f for p in predictors for f in run_files(p.name)] + list(getattr(dataset, "paths", []))
    refuse_inputs("--output", output, inputs)
    refuse_inputs("--probs", probs_path, inputs)
    if probs_path and same_file(probs_path, output):
        raise OptionError(f"--probs {probs_path} is also --output: one would replace the other; choose another")
    _, ids = dataset.metadata()
    probs, _ = predict_dataset(predictors, dataset, **predict_kw)
    if probs_path:
        with atomic_path(probs_path, ".npz") as tmp:
            np.savez(tmp, probs=probs.astype(np.float32), ids=np.asarray(ids))
    write_submission(output, ids, probs.argmax(1))
    return ids


def format_top_k(results, as_json: bool = False) -> tuple[str, list[str]]:
    """(the answers for ``top_k``'s results, as lines or JSON; one error line per photo that failed)."""
    import json
    if as_json:
        text = json.dumps([{"file": p, "error": str(r)} if isinstance(r, Exception) else
                           {"file": p, "top": [{"label": c, "name": n, "probability": v} for c, n, v in r]}
                           for p, r in results], indent=1)
    else:
        text = "\n".join(f"{path}: " + ", ".join(f"{n} ({c}) {v:.3f}" for c, n, v in r)
                         for path, r in results if not isinstance(r, Exception))
    return text, [str(r) for _, r in results if isinstance(r, Exception)]
