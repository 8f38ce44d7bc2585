import os

import torch

from petalnet.data.dataset import open_split
from petalnet.data.synthetic import FLOWERS, SPLITS, synthetic_data


def _bytes(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def test_deterministic_layout(tmp_path):
    a = synthetic_data(48, seed=1, root=str(tmp_path / "a"))
    b = synthetic_data(48, seed=1, root=str(tmp_path / "b"))
    assert _bytes(a) == _bytes(b)
    assert sorted(_bytes(a)) == ["tfrecords-jpeg-48x48/test/00-48x48-90.tfrec",
                                 "tfrecords-jpeg-48x48/train/00-48x48-256.tfrec",
                                 "tfrecords-jpeg-48x48/train/01-48x48-224.tfrec",
                                 "tfrecords-jpeg-48x48/val/00-48x48-120.tfrec"]
    c = synthetic_data(48, seed=2, root=str(tmp_path / "c"))
    assert _bytes(a) != _bytes(c)
    assert synthetic_data(48, seed=1, root=str(tmp_path / "a")) == a   # generated once, then reused


def _features(ds):
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float() / 255
    x = torch.nn.functional.avg_pool2d(x, 8)          # coarse colour layout, 8x8
    return x.flatten(1), torch.tensor(ds.metadata()[0].tolist())


def test_classes_are_learnable(tmp_path):
    """A linear model on 8x8 thumbnails must beat chance (1/6) by far, but the task is not trivial."""
    root = synthetic_data(64, seed=0, root=str(tmp_path / "s"))
    train, val = open_split(root, "train"), open_split(root, "val")
    labels = sorted(FLOWERS)
    xt, yt = _features(train)
    xv, yv = _features(val)
    assert len(xt) == SPLITS["train"] * len(FLOWERS)
    to_idx = {c: i for i, c in enumerate(labels)}
    yt = torch.tensor([to_idx[int(v)] for v in yt])
    yv = torch.tensor([to_idx[int(v)] for v in yv])
    torch.manual_seed(0)
    model = torch.nn.Linear(xt.shape[1], len(labels))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model((xt - mean) / std), yt).backward()
        opt.step()
    acc = (model((xv - mean) / std).argmax(1) == yv).float().mean().item()
    assert acc > 0.6, acc
