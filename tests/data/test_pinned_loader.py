"""ThreadedLoader with pin_memory: threads decode into reused (pinned) batch buffers, and a buffer is
refilled only after the event recorded when the consumer asked for the next batch has completed."""
import threading

import pytest
import torch

from petalnet.data.dataset import TFRecordImages
from petalnet.data.loader import ThreadedLoader, WithIndex, create_loader


def _loaders(path, **kw):
    ds = WithIndex(TFRecordImages([path]))
    common = dict(shuffle=True, seed=4, num_workers=0, threads=2, prefetch_factor=2, flip=True, **kw)
    return create_loader(ds, 32, **common), create_loader(ds, 32, pin_memory=True, **common)


def test_reused_buffers_give_the_plain_loaders_batches(val_copy):
    """Two epochs (flips, a short last batch of 5): the same images, labels and indices as the plain
    ThreadedLoader, out of prefetch + 1 = 3 buffers only."""
    plain, pinned = _loaders(val_copy)
    assert isinstance(pinned, ThreadedLoader) and pinned.reuse
    ptrs = set()
    for epoch in (0, 1):
        for loader in (plain, pinned):
            loader.sampler.set_epoch(epoch)
        n = 0
        for (a, la, ia), (b, lb, ib) in zip(plain, pinned):
            ptrs.add(b.data_ptr())
            assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
            assert b.is_contiguous(memory_format=torch.channels_last)
            n += len(b)
        assert n == 261
    assert len(ptrs) == 3
    assert b.is_pinned() == torch.cuda.is_available()


def test_a_buffer_is_refilled_only_after_the_consumers_copies(val_copy, monkeypatch):
    """The order of events in every buffer's life: filled, handed out, used by the consumer, an event
    recorded when the consumer asks for the next batch, that event waited for, then refilled."""
    log, lock = [], threading.Lock()

    def note(*entry):
        with lock:
            log.append(entry)

    class FakeEvent:
        count = 0

        def __init__(self):
            FakeEvent.count += 1
            self.n = FakeEvent.count
            note("record", self.n)

        def synchronize(self):
            note("sync", self.n)

    monkeypatch.setattr(ThreadedLoader, "_event", lambda self: FakeEvent())
    fill = ThreadedLoader._fill

    def logged_fill(self, indices, flips, slot):
        note("fill", slot["images"].data_ptr(), slot["event"].n)
        return fill(self, indices, flips, slot)
    monkeypatch.setattr(ThreadedLoader, "_fill", logged_fill)
    _, loader = _loaders(val_copy)
    inner = loader.dataset.dataset
    load_batch = inner.load_batch

    def logged_load_batch(indices, flips=None, out=None):
        note("write", out.ctypes.data)
        return load_batch(indices, flips, out=out)
    inner.load_batch = logged_load_batch
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        for images, _, _ in loader:
            note("use", images.data_ptr())
            images.sum()   # the consumer's work on the buffer

    recorded_at = {e[1]: k for k, e in enumerate(log) if e[0] == "record"}
    last_use, fills = {}, 0
    for k, entry in enumerate(log):
        if entry[0] == "use":
            last_use[entry[1]] = k
        elif entry[0] == "fill":
            fills += 1
            _, ptr, ev = entry
            assert last_use.get(ptr, -1) < recorded_at[ev] < k, "event recorded before the consumer was done"
            write = next(j for j in range(k, len(log)) if log[j] == ("write", ptr))
            assert ("sync", ev) in log[k:write], "buffer overwritten before its event completed"
            later = [e for e in log[k + 1:] if e[0] in ("fill", "use") and e[1] == ptr]
            assert later and later[0][0] == "use", "buffer refilled before it was handed out"
    assert fills == 2 * 9


def test_pinned_buffers_need_the_batch_decode_path(val_copy):
    ds = TFRecordImages([val_copy], transform=lambda x: x)
    loader = create_loader(ds, 32, num_workers=0, threads=2, pin_memory=True)
    with pytest.raises(ValueError, match="pinned batch buffers need a dataset with load_batch, no transform"):
        next(iter(loader))
