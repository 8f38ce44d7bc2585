import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score

from petalnet.cli import main
from petalnet.data.dataset import open_split
from petalnet.data.synthetic import synthetic_data
from petalnet.errors import PetalnetError
from petalnet.predict import load_photo, load_predictor, predict_batches, predict_dataset
from petalnet.engine import TrainConfig, train


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))


@pytest.fixture(scope="module")
def run(synthetic, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "lite0")
    train(TrainConfig(data=synthetic, out=out, epochs=1, precision="32", workers=0, quiet=True))
    return out


@pytest.fixture(scope="module")
def other_run(synthetic, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "other")
    train(TrainConfig(data=synthetic, out=out, epochs=1, precision="32", workers=0, quiet=True, seed=5,
                      lr=3e-3))
    return out


def test_submission_for_petals_mini_test(run, petals, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    assert main(["predict", run, "--data", petals, "--output", str(out), "--probs", str(tmp_path / "p.npz")]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label"] and len(rows) == 504
    _, ids = open_split(petals, "test").metadata()
    assert [r[0] for r in rows[1:]] == ids
    assert all(0 <= int(r[1]) <= 103 for r in rows[1:])
    saved = np.load(tmp_path / "p.npz")
    assert saved["probs"].shape == (503, 104) and list(saved["ids"]) == ids
    assert np.allclose(saved["probs"].sum(1), 1, atol=1e-4)
    assert [int(r[1]) for r in rows[1:]] == saved["probs"].argmax(1).tolist()


def test_single_split_folder_labelled_or_not(run, petals, tmp_path):
    for split in ("val", "test"):
        out = tmp_path / f"{split}.csv"
        folder = os.path.join(petals, "tfrecords-jpeg-192x192", split)
        assert main(["predict", run, "--data", folder, "--output", str(out)]) == 0
        assert len(out.read_text().splitlines()) == {"val": 774, "test": 504}[split]


def test_ensemble_and_tta(run, other_run, synthetic):
    a, b = load_predictor(run), load_predictor(other_run)
    ds = open_split(synthetic, "val")
    alone, labels = predict_dataset([a], ds)
    twice, _ = predict_dataset([a, a], ds)
    assert np.allclose(alone, twice, atol=1e-12)                      # a run with itself is the run
    only_b, _ = predict_dataset([a, b], ds, weights=[0, 1])
    assert np.allclose(only_b, predict_dataset([b], ds)[0], atol=1e-12)
    mixed, _ = predict_dataset([a, b], ds, weights=[3, 1])
    assert np.allclose(mixed, 0.75 * alone + 0.25 * only_b, atol=1e-9)
    # TTA is the mean over the image, its mirror and the centre zoom
    images = torch.stack([ds[i][0] for i in range(8)])
    (tta, _), = predict_batches([a], [(images, None)], tta=True, tta_margin=1)
    (plain, _), = predict_batches([a], [(images, None)])
    (mirror, _), = predict_batches([a], [(images.flip(-1), None)])
    # the centre 56 of 64 px, scaled back up to 64 by the model's own preprocessing
    (zoom, _), = predict_batches([a], [(images[..., 4:60, 4:60], None)])
    assert not torch.allclose(tta, plain)
    assert torch.allclose(tta, (plain + mirror + zoom) / 3, atol=1e-4)
    (flip, _), = predict_batches([a], [(images, None)], tta="flip", tta_margin=1)
    assert torch.allclose(flip, (plain + mirror) / 2, atol=1e-4)
    # no tta given: the run's own choice, recorded at training
    a.tta = "flip"
    (default, _), = predict_batches([a], [(images, None)], tta_margin=1)
    assert torch.allclose(default, flip, atol=1e-6)
    with pytest.raises(PetalnetError, match="--tta sideways"):
        next(predict_batches([a], [(images, None)], tta="sideways"))


class Halves(torch.nn.Module):
    """Three classes from the left and right halves' brightness; a mirror swaps the halves, which is not a
    permutation of the logits (the bias and the third class)."""

    def __init__(self, scale: float = 4.0, bias: float = 1.0):
        super().__init__()
        self.scale, self.bias = scale, bias

    def forward(self, x):
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([left, right + self.bias / self.scale, (left + 2 * right) / 3], 1) * self.scale


def test_tta_views_run_only_for_unsure_images():
    from petalnet.predict import Predictor, unsure
    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
    images[0, ..., :4] = 255                               # sure: class 0
    images[1, ..., :4], images[1, ..., 4:] = 135, 120      # nearly even
    images[2, ..., 4:] = 255                               # sure: class 1
    images[3, ..., :4], images[3, ..., 4:] = 140, 128
    images[4, ..., :4], images[4, ..., 4:] = 200, 60
    images[5, ..., :4], images[5, ..., 4:] = 60, 160
    calls = []

    def predictor(name, **kw):
        model = Halves(**kw)
        model.register_forward_hook(lambda m, args, out: calls.append((name, len(args[0]))))
        return Predictor(name, model, 3, 8, (0.5,) * 3, (0.25,) * 3, tta="full")

    a, b = predictor("a"), predictor("b", scale=1.5, bias=-0.5)

    def run(predictors, images, **kw):
        calls.clear()
        (probs, _), = predict_batches(predictors, [(images, None)], precision="32", **kw)
        return probs

    for members, weights in (([a], None), ([a, b], [3, 1])):
        first = run(members, images, tta="none", weights=weights)
        every = run(members, images, weights=weights, tta_margin=1)        # the views for every image
        assert not torch.allclose(first, every, atol=1e-3)
        if weights:   # the ensemble's are its members', weighted
            assert torch.allclose(first, 0.75 * run([a], images, tta="none") + 0.25 * run([b], images, tta="none"))
            assert torch.allclose(every, 0.75 * run([a], images, tta_margin=1) + 0.25 * run([b], images, tta_margin=1))
        rows = unsure(first, 0.5)
        assert 0 < len(rows) < len(images)                  # some images are sure, some are not
        got = run(members, images, weights=weights, tta_margin=0.5)
        # the zoom and the mirror ran once per member, for the unsure images only
        assert calls == [(m.name, 6) for m in members] + [(m.name, len(rows)) for m in members for _ in "zm"]
        sure = [i for i in range(len(images)) if i not in rows.tolist()]
        assert torch.allclose(got[rows], every[rows], atol=1e-9) and torch.allclose(got[sure], first[sure], atol=1e-9)
        assert torch.allclose(got.sum(1), torch.ones(len(images), dtype=got.dtype), atol=1e-9)
        assert torch.allclose(run(members, images, weights=weights, tta_margin=0), first, atol=1e-9)
    # margin 1 is the plain mean of the views (test_ensemble_and_tta: the zoom's too)
    plain, mirror = run([a], images, tta="none"), run([a], images.flip(-1), tta="none")
    assert torch.allclose(run([a], images, tta="flip", tta_margin=1), (plain + mirror) / 2, atol=1e-6)
    with pytest.raises(PetalnetError, match="--tta-margin"):
        next(predict_batches([a], [(images, None)], tta_margin=-0.1))


def test_evaluate_outputs_and_metrics(run, synthetic, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", run, "--data", synthetic, "--json", "--out", str(out)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "macro_precision", "macro_recall", "images"} <= set(got)
    assert got["images"] == 120 and len(got["per_class"]) >= 6
    probs, labels = predict_dataset([load_predictor(run)], open_split(synthetic, "val"))
    assert got["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"), abs=1e-9)
    for name, min_side in (("confusion.png", 400), ("examples.png", 600), ("per_class.png", 300)):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and min(img.size) >= min_side, (name, img.size)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "val"
    # the most confident mistakes: every wrong prediction at least as confident as the last one listed
    preds, top = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(preds != labels)
    mistakes = saved["confident_mistakes"]
    assert len(mistakes) == min(12, len(wrong))
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    for m in mistakes:
        i = m["index"]
        assert preds[i] == m["predicted"] != labels[i] == m["label"]
        assert m["probability"] == pytest.approx(top[i]) and m["true_probability"] == pytest.approx(probs[i, labels[i]])
    if mistakes:
        assert sorted(top[wrong])[::-1][:len(mistakes)] == pytest.approx([m["probability"] for m in mistakes])
        assert _png_ok(out / "mistakes.png", 200)


def test_wrong_inputs_write_nothing(run, petals, synthetic, tmp_path, capsys):
    # a labelled evaluation of an unlabelled split
    assert main(["evaluate", run, "--data", petals, "--split", "test", "--out", str(tmp_path / "e")]) == 1
    assert "split 'test' is unlabelled" in capsys.readouterr().err and not (tmp_path / "e").exists()
    # an output in a missing folder
    assert main(["predict", run, "--data", petals, "--output", str(tmp_path / "no" / "s.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()
    # a checkpoint for another number of classes
    state = torch.load(os.path.join(run, "checkpoints", "best.pt"), weights_only=False)
    from petalnet.models import create_model
    small, _ = create_model(state["model_name"], 10, pretrained=False)
    ten = tmp_path / "ten.pt"
    torch.save({**state, "model": small.state_dict(), "num_classes": 10}, ten)
    assert main(["evaluate", str(ten), "--data", synthetic, "--out", str(tmp_path / "e2")]) == 1
    assert "but the model has 10 classes" in capsys.readouterr().err and not (tmp_path / "e2").exists()
    assert main(["predict", run, "--ensemble", str(ten), "--data", synthetic, "--split", "test",
                 "--output", str(tmp_path / "s.csv")]) == 1
    assert "different numbers of classes" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(PetalnetError, match="junk.pt: not a readable checkpoint"):
        load_predictor(str(tmp_path / "junk.pt"))
    # devices that are not there, or not devices
    missing = ["tpu", "banana"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"])
    for device in missing:
        assert main(["predict", run, "--data", synthetic, "--split", "test", "--device", device,
                     "--output", str(tmp_path / "s.csv")]) == 1
        err = capsys.readouterr().err
        assert f"--device {device}:" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "s.csv").exists()


def test_top_k_for_photos(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    png = tmp_path / "flower.png"
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(png)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert main(["predict", run, str(png), str(bad), "--top-k", "3", "--json"]) == 1
    captured = capsys.readouterr()
    answers = json.loads(captured.out)
    assert answers[0]["file"] == str(png) and len(answers[0]["top"]) == 3
    probs = [t["probability"] for t in answers[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert "notes.jpg: not a readable image" in captured.err and "error" in answers[1]


def test_photo_exif_orientation(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)        # left half red
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6                 # "rotate 90 CW to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    x = load_photo(str(tmp_path / "rotated.jpg"), 40)
    # displayed upright, the red half is on top
    assert x[0, :10].float().mean() > 200 and x[0, -10:].float().mean() < 60


def _png_ok(path, min_side=300):
    with Image.open(path) as img:
        return img.format == "PNG" and min(img.size) >= min_side


def test_compare_runs(run, other_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", run, other_run, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "lite0" in table and "other" in table and "infer/s" in table
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["run"] for r in rows] == ["lite0", "other"]
    for r in rows:
        assert r["parameters"] > 1e6 and r["inference_images_per_second"] > 0
        # 1 epoch: best = last; predict runs bf16 where training evaluated in fp32, so a few images may flip
        assert r["eval_macro_f1"] == pytest.approx(r["best_val_macro_f1"], abs=0.03)
    assert _png_ok(out / "curves.png") and _png_ok(out / "per_class_f1.png", 250)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http://" not in page and "https://" not in page


def test_compare_trains_first(synthetic, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--train", "--models", "tf_efficientnet_lite0", "resnet18", "--no-pretrained",
                 "--data", synthetic, "--epochs", "1", "--image-size", "64", "--out", str(out), "--quiet",
                 "--workers", "0"]) == 0
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["model"] for r in rows] == ["tf_efficientnet_lite0", "resnet18"]
    assert (out / "resnet18" / "checkpoints" / "best.pt").is_file()


def test_report_is_self_contained_and_renders(run, tmp_path):
    import shutil
    import subprocess
    page = tmp_path / "report.html"
    assert main(["report", run, "--output", str(page)]) == 0
    text = page.read_text()
    with open(os.path.join(run, "eval-val", "metrics.json")) as fh:
        mistakes = json.load(fh)["confident_mistakes"]
    # curves, LR, per-class F1 and distribution, confusion matrix, (confident mistakes,) examples
    assert text.count("data:image/png;base64,") == 5 + bool(mistakes)
    assert "weakest F1 first" in text and (not mistakes or "most confident mistakes" in text)
    assert "macro-F1" in text and "<script" not in text and "https://" not in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    shot = tmp_path / "shot.png"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as img:
        lo, hi = img.convert("L").getextrema()
        assert img.size == (1280, 1600) and hi - lo > 200   # text and plots, not a blank page
        inked = (np.asarray(img.convert("L")) < 250).mean()
        assert inked > 0.03, inked   # about 8 % for a report with its plots


def test_confident_mistakes_most_confident_first():
    from petalnet.evaluate import confident_mistakes
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.03, 0.02, 0.95], [0.6, 0.4, 0.0]])
    got = confident_mistakes(probs, np.array([1, 1, 0, 0]), ["a", "b", "c", "d"], k=5)
    assert [(m["id"], m["label"], m["predicted"], m["probability"], m["true_probability"]) for m in got] == \
        [("c", 0, 2, 0.95, 0.03), ("a", 1, 0, 0.9, 0.1)]
    assert len(confident_mistakes(probs, np.array([1, 1, 0, 0]), list("abcd"), k=1)) == 1
