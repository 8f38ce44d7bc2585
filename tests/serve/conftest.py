import io
import os

import pytest

from petalnet.data.dataset import open_split
from petalnet.data.synthetic import synthetic_data
from petalnet.engine import TrainConfig, train


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """A small model trained on the synthetic flowers (the names it answers are real class names)."""
    root = synthetic_data(64, seed=0, root=str(tmp_path_factory.mktemp("syn")))
    out = str(tmp_path_factory.mktemp("runs") / "lite0")
    train(TrainConfig(data=root, out=out, epochs=1, precision="32", workers=0, quiet=True))
    return out


@pytest.fixture(scope="session")
def daisy_jpeg(petals):
    """A real photo from petals-mini val: the JPEG bytes of its first daisy."""
    ds = open_split(petals, "val")
    labels, _ = ds.metadata()
    return ds.read(int((labels == 48).nonzero()[0][0]))["image"]


@pytest.fixture
def photo_file(tmp_path, daisy_jpeg):
    path = tmp_path / "daisy.jpg"
    path.write_bytes(daisy_jpeg)
    return str(path)


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "test-artifacts")
