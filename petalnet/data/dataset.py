"""Map-style dataset over TFRecord files: random access by index, uint8 CHW images out.

Indexable, so any sampler can shuffle it, shard it over DDP ranks (``ShardSampler``) and
DataLoader workers, and resume mid-epoch. Images stay uint8 until they reach the device
(timm's fast-collate pattern): decoding is the only per-image work in the workers.
"""
from __future__ import annotations

import bisect
import re
import warnings

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from petalnet.classes import CLASSES
from petalnet.data import example
from petalnet.data.discovery import count_from_name, discover
from petalnet.data.images import check_pixels, header_size
from petalnet.data.tfrecord import RecordReader, load_index
from petalnet.errors import DataError, ExampleError

# torchvision 0.29 announces a move of its decoders to TorchCodec; they still work and are what we use.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")


def decode(data: bytes) -> torch.Tensor:
    """uint8 CHW RGB tensor from JPEG (or PNG/WebP/GIF) bytes; RuntimeError when corrupt."""
    if not data:
        raise RuntimeError("empty image bytes")
    img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    if img.dtype == torch.uint16:   # 16-bit PNGs decode as uint16: scaled, not wrapped into uint8
        img = (img.float() / 257.0).round_().to(torch.uint8)
    return img


try:   # libjpeg-turbo that decodes into a caller's buffer and releases the GIL: threads scale
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency; the torchvision path still works
    simplejpeg = None


def scaled_size(height: int, width: int, target: int | None) -> tuple[int, int] | None:
    """(height, width) a JPEG decodes to at reduced scale for a later resize to ``target``, or None for
    a full decode. libjpeg-turbo scales inside the inverse DCT by k/8 (here k = 1..4, factors >= 2, the
    cheap ones); the smallest such k whose output is still >= target on both sides, output sides
    ceil(side * k / 8), as simplejpeg's ``min_height``/``min_width``/``min_factor=2`` choose. Only when
    the target is at most half the stored size: a full decode is otherwise as cheap as any."""
    if not target or 2 * target > min(height, width):
        return None
    for k in (1, 2, 3, 4):
        h, w = -(-height * k // 8), -(-width * k // 8)
        if h >= target and w >= target:
            return h, w
    return None  # pragma: no cover - k = 4 always qualifies under the guard above


def _clean(err: Exception) -> str:
    # torchvision prefixes its messages with "func, /path/file.cpp:LINE, "
    return re.sub(r"^.*?\.cpp:\d+, ", "", str(err)).strip()


class TFRecordImages(torch.utils.data.Dataset):
    """The records of ``files`` as ``(image, label)`` (labelled) or ``(image, id)`` (unlabelled).

    image_size: the size the images must have (square); a different image is an error naming it.
    labeled: None decides from the first record (whether it has ``label_key``).
    transform: called on each uint8 CHW image in the worker (e.g. a random flip).
    skip_bad: skip bad records (with a warning) instead of raising: bad framing or checksums, and,
    checked once when the dataset opens, records that are not Examples, lack a feature or hold it
    with the wrong type, have a class outside 0..``num_classes``-1 or an image that does not decode.
    decode: False hands out the encoded JPEG bytes as a 1-D uint8 tensor, for a batched decode on
    the GPU (nvJPEG, ``DevicePreprocess``); size checks then happen there.
    decode_size: the size the images are resized to afterwards (on the device). Where it is at most
    half the stored size, JPEGs are decoded at reduced scale (``scaled_size``: 512 -> 256 for 224 or
    256) and the device resizes the rest; images then come out at that reduced size, the same for
    every image of one stored size. ``image_size`` is still checked against the stored size.
    """

    def __init__(self, paths: list[str], *, image_size: int | None = None, labeled: bool | None = None,
                 image_key: str = "image", label_key: str = "class", id_key: str = "id",
                 transform=None, skip_bad: bool = False, use_cache: bool = True, decode: bool = True,
                 num_classes: int = len(CLASSES), decode_size: int | None = None):
        if not paths:
            raise DataError("<dataset>", "no record files given")
        self.paths = [str(p) for p in paths]
        self.readers: list[RecordReader] = []
        self.problems: list[str] = []   # what skip_bad skipped or let through, for reports
        for path in self.paths:
            index = load_index(path, skip_bad=skip_bad, use_cache=use_cache)
            named = count_from_name(path)
            if named is not None and named != len(index):
                err = DataError(path, f"file name says {named} records, the file holds {len(index)}")
                if not skip_bad:
                    raise err
                warnings.warn(str(err), stacklevel=2)
                self.problems.append(str(err))
            self.problems += index.problems
            self.readers.append(RecordReader(index))
        self.ends = np.cumsum([len(r) for r in self.readers]).tolist()
        self.keep: np.ndarray | None = None   # the records kept by skip_bad's screening, when it drops any
        self.image_size, self.transform, self.decode = image_size, transform, decode
        self.decode_size = decode_size
        self.image_key, self.label_key, self.id_key = image_key, label_key, id_key
        if labeled is None:
            labeled = len(self) > 0 and label_key in self._first_keys(skip_bad)
        self.labeled = labeled
        self.spec = {image_key: "bytes", id_key: "bytes"}
        self.meta_spec = {id_key: "bytes"}
        if labeled:
            self.spec[label_key] = self.meta_spec[label_key] = "int64"
        self.num_classes = num_classes
        if skip_bad:
            self._screen()

    def _first_keys(self, skip_bad: bool) -> dict[str, str]:
        """The feature keys of the first record (with skip_bad: of the first that is an Example)."""
        for i in range(len(self) if skip_bad else 1):
            try:
                return self._keys(i)
            except DataError:
                if not skip_bad or i == len(self) - 1:
                    raise
        return {}

    def _screen(self) -> None:
        """skip_bad: drop, with one warning, the records that would stop a run later: each record's
        features parsed, its label range checked, its image's header checked and its data decoded at
        1/8 scale (libjpeg-turbo reads every coefficient, so truncated or corrupt data shows: 0.06 ms
        for a 192 px JPEG against 0.11 ms for the full decode)."""
        keep, bad = [], []
        for i in range(len(self)):
            try:
                feats = self.read(i)
                if self.labeled and not 0 <= feats[self.label_key] < self.num_classes:
                    raise self.error(i, f"class {feats[self.label_key]} outside 0..{self.num_classes - 1}",
                                     feats[self.id_key])
                self.check_header(i, feats)
                data = feats[self.image_key]
                try:
                    if simplejpeg is not None and data[:2] == b"\xff\xd8":
                        simplejpeg.decode_jpeg(data, min_height=1, min_width=1)
                    else:
                        decode(data)
                except (ValueError, RuntimeError) as e:
                    raise self.error(i, f"corrupt image ({_clean(e)})", feats[self.id_key]) from None
            except DataError as e:
                bad.append(str(e))
                continue
            keep.append(i)
        if bad:
            self.keep = np.asarray(keep, np.int64)
            self.problems += bad
            warnings.warn(f"skipped {len(bad)} bad record(s), kept {len(keep)}: " + "; ".join(bad[:3])
                          + (" ..." if len(bad) > 3 else ""), stacklevel=3)

    def check_labels(self, labels: np.ndarray, num_classes: int | None = None) -> None:
        """Raise naming the first record whose label (of ``metadata()``'s ``labels``) is outside
        0..``num_classes``-1 (default: the dataset's)."""
        n = num_classes or self.num_classes
        bad = np.flatnonzero((labels < 0) | (labels >= n))
        if len(bad):
            i = int(bad[0])
            raise self.error(i, f"class {labels[i]} outside 0..{n - 1}"
                                + (f" ({len(bad)} such records)" if len(bad) > 1 else ""))

    def __len__(self) -> int:
        return len(self.keep) if self.keep is not None else self.ends[-1] if self.ends else 0

    def locate(self, i: int) -> tuple[int, int]:
        """(file number, record number in that file) of global index ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range 0..{len(self) - 1}")
        if self.keep is not None:
            i = int(self.keep[i])
        f = bisect.bisect_right(self.ends, i)
        return f, i - (self.ends[f - 1] if f else 0)

    def error(self, i: int, what: str, image_id: bytes | None = None) -> DataError:
        """A DataError naming the file, record number, byte offset and id of record ``i``."""
        f, r = self.locate(i)
        ident = f", id {image_id.decode(errors='replace')}" if image_id is not None else ""
        return DataError(self.paths[f], f"record {r}{ident}: {what}", int(self.readers[f].index.offsets[r]))

    def read(self, i: int, spec: dict[str, str] | None = None) -> dict:
        """The parsed features of record ``i`` (payload checksum checked)."""
        f, r = self.locate(i)
        try:
            return example.parse(self.readers[f].read(r), spec or self.spec)
        except ExampleError as e:
            raise self.error(i, str(e)) from None

    def _keys(self, i: int) -> dict[str, str]:
        f, r = self.locate(i)
        try:
            return example.keys(self.readers[f].read(r))
        except ExampleError as e:
            raise self.error(i, str(e)) from None

    def check_header(self, i: int, feats: dict) -> tuple[int, int]:
        """(width, height) from the header of record ``i``'s image, refused before any pixel is decoded
        when it is not ``image_size`` square (or, with no size to expect, over ``MAX_PIXELS``): a 16x16
        JPEG whose header claims 60000x60000 would otherwise take 11 GB to decode (issue 14)."""
        try:
            w, h = header_size(feats[self.image_key])
        except ValueError as e:
            raise self.error(i, f"corrupt image ({e})", feats[self.id_key]) from None
        if self.image_size and (w, h) != (self.image_size, self.image_size):
            raise self.error(i, f"image is {w}x{h}, expected {self.image_size}x{self.image_size}",
                             feats[self.id_key])
        if (problem := check_pixels(w, h)) is not None:
            raise self.error(i, problem, feats[self.id_key])
        return w, h

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        """Decoded, size-checked image of record ``i`` and its parsed features (before ``transform``)."""
        feats = self.read(i)
        w, h = self.check_header(i, feats)
        data = feats[self.image_key]
        if self.decode_size and simplejpeg is not None and data[:2] == b"\xff\xd8":
            scaled = scaled_size(h, w, self.decode_size)
            if scaled:
                return torch.from_numpy(self._decode_jpeg(i, feats, scaled)).permute(2, 0, 1), feats
        try:
            img = decode(data)
        except RuntimeError as e:
            raise self.error(i, f"corrupt image ({_clean(e)})", feats[self.id_key]) from None
        if self.image_size and img.shape[-2:] != (self.image_size, self.image_size):
            raise self.error(i, f"image is {img.shape[-1]}x{img.shape[-2]}, expected "
                                f"{self.image_size}x{self.image_size}", feats[self.id_key])
        return img, feats

    def __getitem__(self, i: int):
        if self.decode:
            img, feats = self.load(i)
        else:
            feats = self.read(i)
            self.check_header(i, feats)   # nvJPEG would allocate what the header claims, on the GPU
            img = torch.frombuffer(bytearray(feats[self.image_key]), dtype=torch.uint8)
        if self.transform is not None:
            img = self.transform(img)
        return img, (int(feats[self.label_key]) if self.labeled else feats[self.id_key].decode())

    def _decode_jpeg(self, i: int, feats: dict, scaled: tuple[int, int] | None, buffer=None) -> np.ndarray:
        """simplejpeg decode of record ``i``'s JPEG, at ``scaled`` size (reduced scale) or full size."""
        kw = dict(min_height=scaled[0], min_width=scaled[1], min_factor=2) if scaled else {}
        try:
            img = simplejpeg.decode_jpeg(feats[self.image_key], colorspace="RGB", buffer=buffer, **kw)
        except ValueError as e:
            raise self.error(i, f"corrupt image ({e})", feats[self.id_key]) from None
        if scaled and img.shape[:2] != scaled:   # libjpeg-turbo chose another scale: not the batch's shape
            raise self.error(i, f"decoded at reduced scale to {img.shape[1]}x{img.shape[0]}, expected "
                                f"{scaled[1]}x{scaled[0]}", feats[self.id_key])
        return img

    def output_size(self, i: int = 0) -> tuple[int, int]:
        """(height, width) record ``i``'s image has as ``load_batch`` hands it out (reduced-scale decoding
        included), from the JPEG header alone: the shape of preallocated batch buffers."""
        feats = self.read(i)
        if simplejpeg is not None and feats[self.image_key][:2] == b"\xff\xd8":
            w, h = self.check_header(i, feats)
            return scaled_size(h, w, self.decode_size) or (h, w)
        return tuple(self.load(i)[0].shape[-2:])

    def load_batch(self, indices: list[int], flips: list[bool] | None = None, out: np.ndarray | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | list[str]]:
        """(uint8 batch (B, 3, H, W) in channels-last memory, labels or ids) of records ``indices``.

        JPEGs are decoded straight into the batch (simplejpeg: no per-image tensor, no stack copy, GIL
        released), so several threads build batches in parallel; channels-last is also the layout the
        models run in. ``flips[k]`` mirrors image k in place. Other formats go through ``load``.
        ``transform`` is not applied here. ``decode_size``: reduced-scale decoding (``scaled_size``).
        ``out``: a (>= B, H, W, 3) uint8 array to decode into (e.g. a view of a pinned buffer); the
        images must then have that size.
        """
        buf, ref, targets = None, None, []   # ref: the stored (h, w) every image of the batch must have
        for k, i in enumerate(indices):
            feats = self.read(i)
            data = feats[self.image_key]
            if simplejpeg is not None and data[:2] == b"\xff\xd8":
                w, h = self.check_header(i, feats)
                ref = ref or ((self.image_size, self.image_size) if self.image_size else (h, w))
                if (h, w) != ref:
                    raise self.error(i, f"image is {w}x{h}, expected {ref[1]}x{ref[0]}", feats[self.id_key])
                scaled = scaled_size(h, w, self.decode_size)
                size = scaled or (h, w)
                if buf is None:
                    buf = np.empty((len(indices), *size, 3), np.uint8) if out is None else out[:len(indices)]
                if buf.shape[1:3] != size:
                    raise self.error(i, f"image decodes to {size[1]}x{size[0]}, the batch buffer holds "
                                        f"{buf.shape[2]}x{buf.shape[1]}", feats[self.id_key])
                self._decode_jpeg(i, feats, scaled, buffer=buf[k])
            else:
                img, _ = self.load(i)
                if buf is None:
                    buf = np.empty((len(indices), img.shape[1], img.shape[2], 3), np.uint8) if out is None \
                        else out[:len(indices)]
                if img.shape[1:] != buf.shape[1:3]:
                    raise self.error(i, f"image is {img.shape[2]}x{img.shape[1]}, expected "
                                        f"{buf.shape[2]}x{buf.shape[1]}", feats[self.id_key])
                buf[k] = img.permute(1, 2, 0).numpy()
            if flips is not None and flips[k]:   # torch's flip: 13x numpy's reversed copy of 3-byte pixels
                row = torch.from_numpy(buf[k])
                row.copy_(row.flip(1))
            targets.append(int(feats[self.label_key]) if self.labeled else feats[self.id_key].decode())
        images = torch.from_numpy(buf).permute(0, 3, 1, 2)
        return images, (torch.tensor(targets, dtype=torch.int64) if self.labeled else targets)

    def metadata(self) -> tuple[np.ndarray | None, list[str]]:
        """(labels or None, ids) of every record, without decoding images."""
        labels, ids = [], []
        for i in range(len(self)):
            feats = self.read(i, self.meta_spec)
            ids.append(feats[self.id_key].decode(errors="replace"))
            if self.labeled:
                labels.append(feats[self.label_key])
        return (np.asarray(labels, np.int64) if self.labeled else None), ids


def open_split(data, split: str | None = None, *, image_size: int | None = None, **kwargs) -> TFRecordImages:
    """Dataset of one split of DATA (any layout ``discover`` takes). ``split=None`` takes the only one."""
    src = discover(data, image_size)
    if split is None:
        if len(src.splits) != 1:
            raise DataError(src.root, f"several splits ({', '.join(src.splits)}): name one")
        split = next(iter(src.splits))
    return TFRecordImages(src.split(split), image_size=src.image_size, **kwargs)

