"""Reduced-scale JPEG decoding (libjpeg-turbo's DCT scaling) for training below half the stored size."""
import io

import numpy as np
import pytest
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image

from petalnet.data import example, tfrecord
from petalnet.data.dataset import TFRecordImages, open_split, scaled_size
from petalnet.data.loader import create_loader
from petalnet.data.synthetic import draw_flower
from petalnet.data.writer import jpeg_bytes, square
from petalnet.errors import DataError


@pytest.fixture(scope="module")
def records_512(tmp_path_factory, petals):
    """8 petals-mini val photos re-encoded at 512 px the way `petalnet convert --size 512` does (bicubic,
    JPEG q95), plus 2 synthetic flowers drawn at 512 px (hard edges: the worst case for a reduced decode)."""
    val = open_split(petals, "val")
    imgs = [square(Image.open(io.BytesIO(val.read(i)["image"])), 512) for i in range(0, 400, 50)]
    rng = np.random.default_rng(0)
    imgs += [draw_flower(label, 512, rng) for label in (48, 73)]
    path = tmp_path_factory.mktemp("r512") / "00-512x512-10.tfrec"
    with tfrecord.TFRecordWriter(str(path)) as w:
        for k, img in enumerate(imgs):
            w.write(example.encode({"image": jpeg_bytes(img), "class": 48, "id": f"{k:09d}"}))
    return str(path)


def test_scaled_size_is_what_libjpeg_turbo_decodes_and_only_at_half_or_less():
    img = (np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)
    for side in (500, 512, 331, 192):
        data = simplejpeg.encode_jpeg(np.asarray(Image.fromarray(img).resize((side, side))), quality=90)
        for target in range(40, side + 1, 7):
            got = scaled_size(side, side, target)
            if 2 * target > side:
                assert got is None, (side, target)
                continue
            assert got[0] >= target and got[0] <= side // 2 + 1
            dec = simplejpeg.decode_jpeg(data, min_height=target, min_width=target, min_factor=2)
            assert dec.shape[:2] == got, (side, target)
    assert scaled_size(512, 512, 224) == (256, 256) and scaled_size(512, 512, 128) == (128, 128)
    assert scaled_size(512, 512, 256) == (256, 256) and scaled_size(512, 512, 257) is None
    assert scaled_size(512, 512, None) is None


def test_reduced_decode_chosen_only_at_half_the_stored_size(records_512):
    """Batch (threaded path) and per-image (DataLoader workers) shapes for several target sizes."""
    for target, side in ((None, 512), (384, 512), (257, 512), (256, 256), (224, 256), (150, 192), (100, 128)):
        ds = TFRecordImages([records_512], image_size=512, decode_size=target)
        images, labels = ds.load_batch([0, 3, 9])
        assert images.shape == (3, 3, side, side), target
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert ds.output_size() == (side, side)
        assert ds[9][0].shape == (3, side, side)
        batch, _ = next(iter(create_loader(ds, 4, num_workers=0)))
        assert batch.shape == (4, 3, side, side)
        assert labels.tolist() == [48, 48, 48]


def test_reduced_decode_then_resize_is_close_to_full_decode_then_resize(records_512):
    """512 -> 224 px: the 256 px DCT-scaled decode resized on the device (bilinear, antialiased, as
    DevicePreprocess does) against the full decode resized the same way: mean absolute difference
    < 1.5 grey levels per image (measured 0.13-0.32 on the photos, 0.55-0.69 on the drawn flowers' hard
    edges)."""
    full = TFRecordImages([records_512])
    reduced = TFRecordImages([records_512], decode_size=224)
    idx = list(range(10))
    a, _ = full.load_batch(idx)
    b, _ = reduced.load_batch(idx)
    assert a.shape[-1] == 512 and b.shape[-1] == 256

    def resize(x):
        return F.interpolate(x.float(), size=(224, 224), mode="bilinear", antialias=True, align_corners=False)

    ra, rb = resize(a), resize(b)
    per_image = (ra - rb).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < 1.5, per_image
    # and the comparison can fail: the neighbouring image, or the mirror, is far off
    assert (ra - rb.roll(1, 0)).abs().mean(dim=(1, 2, 3)).min() > 10
    assert (ra - rb.flip(-1)).abs().mean(dim=(1, 2, 3)).min() > 3
    # the per-image path decodes the same pixels as the batch path
    assert torch.equal(reduced[4][0], b[4])


def test_load_batch_into_a_given_buffer(records_512):
    ds = TFRecordImages([records_512], decode_size=200)
    buf = np.zeros((4, 256, 256, 3), np.uint8)
    images, _ = ds.load_batch([1, 2], flips=[False, True], out=buf)
    assert images.data_ptr() == buf.ctypes.data and images.shape == (2, 3, 256, 256)
    ref, _ = ds.load_batch([1, 2])
    assert torch.equal(images[0], ref[0]) and torch.equal(images[1], ref[1].flip(-1))
    with pytest.raises(DataError, match=r"record 1, id 000000001: image decodes to 256x256, the batch buffer "
                                        r"holds 128x128"):
        ds.load_batch([1], out=np.zeros((1, 128, 128, 3), np.uint8))
