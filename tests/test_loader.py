"""petalnet.data.loader: sharding, the threaded loader's flips and create_loader's choice (the real
data's loading with worker processes is in tests/data/test_dataset.py)."""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from petalnet.augment import flip_mask
from petalnet.data.dataset import TFRecordImages
from petalnet.data.loader import ShardSampler, ThreadedLoader, WithIndex, create_loader


class Tiles(torch.utils.data.Dataset):
    """n distinct, left-right asymmetric uint8 images labelled by their index."""

    def __init__(self, n: int, size: int = 6):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = (torch.arange(3 * self.size * self.size) + 7 * i).remainder(256).to(torch.uint8)
        return img.view(3, self.size, self.size), i


def _shards(n, world, epoch=3, **kw):
    out = []
    for rank in range(world):
        s = ShardSampler(n, rank=rank, world_size=world, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
        assert len(s) == len(out[-1])
    return out


@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (773, 2), (12, 4), (2, 5), (0, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_without_pad_the_ranks_are_disjoint_and_cover_the_data(n, world, shuffle):
    shards = _shards(n, world, shuffle=shuffle, seed=1)
    seen = [i for shard in shards for i in shard]
    assert sorted(seen) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n, world", [(10, 3), (773, 2), (12, 4), (2, 5), (1, 8)])
def test_with_pad_every_rank_gets_the_same_count_and_all_is_covered(n, world):
    shards = _shards(n, world, shuffle=True, seed=2, pad=True)
    assert {len(s) for s in shards} == {math.ceil(n / world)}
    seen = [i for shard in shards for i in shard]
    assert set(seen) == set(range(n)) and len(seen) == world * math.ceil(n / world)


def test_every_rank_draws_from_the_same_permutation_and_epochs_reshuffle():
    def order(epoch, seed=0, world=3):
        shards = []
        for rank in range(world):
            s = ShardSampler(30, rank=rank, world_size=world, shuffle=True, seed=seed)
            s.set_epoch(epoch)
            shards.append(list(s))
        return [shards[k % world][k // world] for k in range(30)]   # interleave back into one order
    g = torch.Generator().manual_seed(0 * 1_000_003 + 4)
    assert order(4) == torch.randperm(30, generator=g).tolist()   # one seeded permutation, dealt out by rank
    assert order(4) == order(4, world=1) == order(4, world=5)     # the same whatever the world size
    assert order(4) != order(5) and order(4) != order(4, seed=1)
    assert sorted(order(5)) == list(range(30))
    plain = ShardSampler(30, rank=1, world_size=3)
    plain.set_epoch(9)
    assert list(plain) == list(range(1, 30, 3))   # no shuffle: epochs change nothing


def test_start_skips_this_ranks_first_samples():
    s = ShardSampler(11, rank=2, world_size=3, shuffle=True, seed=5)
    s.set_epoch(2)
    share = list(s)
    for start in (0, 1, len(share) - 1, len(share), len(share) + 3):
        s.set_epoch(2, start=start)
        assert list(s) == share[start:] and len(s) == len(share[start:])
    s.set_epoch(3)   # a new epoch starts from its beginning again
    assert len(list(s)) == len(share) and s.start == 0
    with pytest.raises(ValueError, match="rank 3 outside world of 3"):
        ShardSampler(11, rank=3, world_size=3)


@pytest.mark.parametrize("epoch", [0, 1])
def test_threaded_loader_flips_each_image_by_its_coin(epoch):
    ds = Tiles(45)
    loader = create_loader(ds, 8, shuffle=True, seed=3, num_workers=0, threads=2, flip=True)
    loader.sampler.set_epoch(epoch)
    got = list(loader)
    ref = create_loader(ds, 8, shuffle=True, seed=3, num_workers=0)   # same sampler settings, no flips
    ref.sampler.set_epoch(epoch)
    want = list(ref)
    assert len(got) == len(want) == 6
    flipped = 0
    for (a, la), (b, lb) in zip(got, want):
        assert torch.equal(la, lb)   # same samples in the same order
        coins = flip_mask(lb, epoch, 3)   # Tiles' label is its index
        assert torch.equal(a, torch.where(coins.view(-1, 1, 1, 1), b.flip(-1), b))
        flipped += int(coins.sum())
    assert 0 < flipped < 45


def test_threaded_loader_fast_path_flips_by_coin_and_adds_indices(val_copy):
    """TFRecordImages decoded into the batch (load_batch), wrapped in WithIndex as training does."""
    ds = WithIndex(TFRecordImages([val_copy]))
    sampler = ShardSampler(len(ds), rank=1, world_size=2, shuffle=True, seed=4, pad=True)
    sampler.set_epoch(2)
    loader = ThreadedLoader(ds, 16, sampler, threads=2, flip=True, seed=4)
    batches = list(loader)
    order = list(sampler)
    assert len(order) == 131 and len(batches) == len(loader) == 9   # 261 records padded to 2 x 131, batches of 16
    images, labels, indices = batches[1]
    assert indices.tolist() == order[16:32]
    coins = flip_mask(indices, 2, 4)
    assert 0 < int(coins.sum()) < 16
    plain = torch.stack([ds.dataset[i][0] for i in indices.tolist()])
    assert torch.equal(images, torch.where(coins.view(-1, 1, 1, 1), plain.flip(-1), plain))
    assert labels.tolist() == [ds.dataset[i][1] for i in indices.tolist()]


def test_threaded_loader_drop_last_and_order_match_the_dataloader():
    ds = WithIndex(Tiles(45))
    for drop_last in (False, True):
        thr = create_loader(ds, 8, shuffle=True, seed=1, num_workers=0, threads=3, drop_last=drop_last)
        ref = create_loader(ds, 8, shuffle=True, seed=1, num_workers=0, drop_last=drop_last)
        for loader in (thr, ref):
            loader.sampler.set_epoch(6)
        got, want = list(thr), list(ref)
        assert len(got) == len(thr) == len(want) == len(ref) == (5 if drop_last else 6)
        for a, b in zip(got, want):
            assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == 3
        assert len(got[-1][0]) == (8 if drop_last else 5)


def test_create_loader_picks_threads_only_without_workers():
    ds = Tiles(20)
    thr = create_loader(ds, 4, num_workers=0, threads=3, prefetch_factor=4, flip=True, seed=2, rank=1,
                        world_size=2, pad=True)
    assert isinstance(thr, ThreadedLoader)
    assert (thr.threads, thr.prefetch, thr.flip, thr.seed) == (3, 6, True, 2)
    assert isinstance(thr.sampler, ShardSampler) and (thr.sampler.rank, thr.sampler.world, thr.sampler.pad) == (1, 2, True)
    for kwargs in (dict(num_workers=0), dict(num_workers=2, threads=2)):   # workers win over threads
        dl = create_loader(ds, 4, **kwargs)
        assert isinstance(dl, DataLoader) and isinstance(dl.sampler, ShardSampler)
        assert dl.num_workers == kwargs["num_workers"]
    dl = create_loader(ds, 4, num_workers=2, prefetch_factor=3, persistent_workers=True)
    assert (dl.prefetch_factor, dl.persistent_workers) == (3, True)
