"""D_t / D_v splitting and paired loaders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from rartsprune.split import PairedLoader, dataset_targets, pair_loaders, split_dataset, split_loaders

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def ids_dataset(n=100, classes=10):
    return TensorDataset(torch.arange(n), torch.arange(n) % classes)


def test_split_is_a_seeded_partition():
    ds = ids_dataset(101)
    a, b = split_dataset(ds, seed=3)
    assert (len(a), len(b)) == (50, 51)
    assert set(a.indices).isdisjoint(b.indices) and sorted(a.indices + b.indices) == list(range(101))
    assert a.indices == sorted(a.indices)
    a2, _ = split_dataset(ds, seed=3)
    a3, _ = split_dataset(ds, seed=4)
    assert a2.indices == a.indices and a3.indices != a.indices
    assert int(a[0][0]) == a.indices[0]


def test_stratified_split_keeps_class_proportions_and_exact_size():
    labels = [0] * 37 + [1] * 50 + [2] * 13  # uneven classes
    ds = TensorDataset(torch.arange(100), torch.tensor(labels))
    a, b = split_dataset(ds, 0.3, seed=0, stratify=True)
    assert len(a) == 30 and len(b) == 70
    counts = Counter(labels[i] for i in a.indices)
    for c, n_c in Counter(labels).items():
        assert abs(counts[c] - 0.3 * n_c) < 1.0, (c, counts[c])
    plain, _ = split_dataset(ds, 0.3, seed=0)
    assert plain.indices != a.indices


def test_targets_from_attribute_subset_chain_and_argument():
    class WithTargets(torch.utils.data.Dataset):
        targets = [1, 0, 1, 0, 1, 0]

        def __len__(self):
            return 6

        def __getitem__(self, i):
            raise AssertionError("targets must come from the attribute, not by loading items")

    ds = WithTargets()
    assert dataset_targets(ds) == [1, 0, 1, 0, 1, 0]
    assert dataset_targets(Subset(Subset(ds, [5, 4, 3]), [0, 2])) == [0, 0]
    a, b = split_dataset(ds, seed=0, stratify=True)
    # quotas 1.5 / 1.5: floors 1 + 1, the one left over goes to the first class among equal remainders
    assert sorted(ds.targets[i] for i in a.indices) == [0, 0, 1]
    a, _ = split_dataset(ids_dataset(10), seed=0, stratify=True, targets=[0] * 5 + [1] * 5)
    assert Counter(i < 5 for i in a.indices) == {True: 3, False: 2}
    with pytest.raises(ValueError, match="targets has 3 entries"):
        split_dataset(ids_dataset(10), stratify=True, targets=[0, 1, 0])


def test_split_errors():
    with pytest.raises(ValueError, match="fraction"):
        split_dataset(ids_dataset(10), 1.0)
    with pytest.raises(ValueError, match="empty"):
        split_dataset(ids_dataset(1))
    with pytest.raises(TypeError, match="map-style"):
        split_dataset(iter(range(10)))


def test_split_loaders_pairs_cycle_the_shorter_half_and_reshuffle_per_epoch():
    ds = ids_dataset(100)
    pairs = split_loaders(ds, batch_size=10, fraction=0.3, seed=1)
    half_t, half_v = (set(h.indices) for h in pairs.halves)
    assert len(pairs) == 7  # the longer half: 70 // 10; the shorter (3 batches) is cycled
    epoch0 = list(pairs)
    assert len(epoch0) == 7
    seen_t = [x.tolist() for (x, _), _ in epoch0]
    seen_v = [x.tolist() for _, (x, _) in epoch0]
    assert all(set(b) <= half_t for b in seen_t) and all(set(b) <= half_v for b in seen_v)
    assert sorted(sum(seen_v, [])) == sorted(half_v)  # one full pass of the longer half
    assert seen_t[3:6] != seen_t[0:3] and sorted(sum(seen_t[:3], [])) == sorted(sum(seen_t[3:6], []))
    (x_t, t_t), (x_v, t_v) = epoch0[0]
    assert x_t.shape == (10,) and torch.equal(t_t, x_t % 10)
    epoch1 = [x.tolist() for (x, _), _ in pairs]  # the next iteration is epoch 1: another order
    assert epoch1 != seen_t
    pairs.set_epoch(0)
    assert [x.tolist() for (x, _), _ in pairs] == seen_t  # deterministic
    fresh = split_loaders(ds, batch_size=10, fraction=0.3, seed=1)
    fresh.set_epoch(1)
    assert [x.tolist() for (x, _), _ in fresh] == epoch1  # a resumed run sees the same batches


def test_split_loaders_sharding_for_ddp():
    ds = ids_dataset(64)
    ranks = [split_loaders(ds, batch_size=4, seed=0, num_replicas=2, rank=r) for r in range(2)]
    assert [len(p) for p in ranks] == [4, 4]
    got = [set(sum((x.tolist() for (x, _), _ in p), [])) for p in ranks]
    assert got[0].isdisjoint(got[1]) and len(got[0] | got[1]) == 32
    with pytest.raises(ValueError, match="both num_replicas and rank"):
        split_loaders(ds, num_replicas=2)


def test_split_loaders_errors():
    with pytest.raises(ValueError, match="fewer than batch_size"):
        split_loaders(ids_dataset(20), batch_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        split_loaders(ids_dataset(20), batch_size=0)
    with pytest.raises(ValueError, match="sampler"):
        split_loaders(ids_dataset(20), batch_size=2, sampler=None)


def test_pair_loaders_of_user_loaders():
    lt = DataLoader(list(range(5)), batch_size=2)
    lv = DataLoader(list(range(10, 20)), batch_size=2)
    pairs = pair_loaders(lt, lv)
    assert isinstance(pairs, PairedLoader) and len(pairs) == 5
    assert [a.tolist() for a, _ in pairs] == [[0, 1], [2, 3], [4], [0, 1], [2, 3]]
    with pytest.raises(ValueError, match="no batches"):
        PairedLoader(DataLoader([], batch_size=2), lv)


def _order(pairs: PairedLoader) -> list[tuple[list[int], list[int]]]:
    return [(t[0].tolist(), v[0].tolist()) for t, v in pairs]


def _shuffled(data: TensorDataset, seed: int) -> DataLoader:
    return DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_paired_loader_respects_the_callers_generators():
    # the bug: the pair reseeded every generator from its own seed, so loaders seeded 1, 2, 3 gave one order
    data = TensorDataset(torch.arange(40))
    orders = [_order(PairedLoader(_shuffled(data, s), _shuffled(data, s + 10))) for s in (1, 2, 3)]
    assert orders[0] != orders[1] != orders[2] != orders[0]
    same = _order(PairedLoader(_shuffled(data, 1), _shuffled(data, 11)))
    assert same == orders[0]  # the caller's seed decides, reproducibly
    pairs = PairedLoader(_shuffled(data, 1), _shuffled(data, 11))
    first, second = _order(pairs), _order(pairs)
    assert first != second  # the generators advance from epoch to epoch
    # seed= reseeds from (seed, epoch): a resumed run that calls set_epoch sees the same batches
    a = PairedLoader(_shuffled(data, 1), _shuffled(data, 11), seed=7)
    b = PairedLoader(_shuffled(data, 2), _shuffled(data, 12), seed=7)
    assert _order(a) == _order(b)
    a_next = _order(a)
    b.set_epoch(1)
    assert _order(b) == a_next
    with pytest.raises(TypeError, match="seed must be an int or None"):
        PairedLoader(_shuffled(data, 1), _shuffled(data, 2), seed=1.5)


def test_stratified_split_of_real_cifar10():
    root = DATA / "cifar10" / "train"
    if not root.is_dir():
        pytest.skip(f"CIFAR-10 ImageFolder tree not found at {root}")
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(root))  # lists files only; no image is decoded
    a, b = split_dataset(ds, seed=0, stratify=True)
    assert len(a) == len(b) == 25_000
    assert Counter(ds.targets[i] for i in a.indices) == {c: 2_500 for c in range(10)}


def test_epoch_seed_is_one_stable_rule() -> None:
    from rartsprune.split import epoch_seed

    # pinned: the same in every process and Python version (a resumed run must draw what the first one drew)
    assert epoch_seed(0, 0, 0) == 8866250585812870066
    seeds = {epoch_seed(s, e, k) for s in range(3) for e in range(5) for k in (0, 1, "finetune", "split")}
    assert len(seeds) == 3 * 5 * 4 and all(0 <= x < 2**63 for x in seeds)
