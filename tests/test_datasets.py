"""Tests of rartsprune.app.data: datasets, decode cache, stratified subsets, batch augmentation, loaders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from rartsprune.app.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    ClassSubset,
    Cutout,
    DeviceLoader,
    InMemoryImageDataset,
    LazyImageFolder,
    Normalize,
    RandomCropPad,
    RandomHorizontalFlip,
    cifar_augment,
    class_names,
    default_augment,
    load_dataset,
    make_loader,
    num_classes,
    stratified_indices,
    to_device_batch,
)
from rartsprune.app.data import datasets as datasets_module

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"
TORCHVISION_CIFAR10_ORDER = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
needs_cifar = pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=f"CIFAR-10 tree not found at {CIFAR}")


def _write_tree(root: Path, classes: dict[str, int], size: int | tuple[int, int] = 16, seed: int = 0) -> Path:
    """A class-folder tree of random PNG images (lossless, so pixels are known exactly)."""
    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            hw = size if isinstance(size, tuple) else (size, size)
            arr = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:03d}.png")
    return root


# --------------------------------------------------------------------------------------------------
# fake data


def test_fake_is_cifar_shaped_and_deterministic() -> None:
    train, again, test = load_dataset("fake"), load_dataset("fake"), load_dataset("fake", "test")
    assert isinstance(train, InMemoryImageDataset)
    assert train.images.shape == (1000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.targets.dtype == torch.int64 and len(test) == 200
    assert torch.equal(train.images, again.images) and torch.equal(train.targets, again.targets)
    assert not torch.equal(train.images[:200], test.images)
    assert num_classes(train) == train.num_classes == 10 and class_names(train)[9] == "class9"
    assert int(train.targets.min()) == 0 and int(train.targets.max()) == 9
    image, label = train[3]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    assert load_dataset("fake", image_size=8).images.shape[-2:] == (8, 8)
    train.images[0].zero_()  # a caller's edit does not leak into the next load
    assert not torch.equal(load_dataset("fake").images[0], train.images[0])


def test_stratified_indices_by_hand() -> None:
    targets = [0] * 6 + [1] * 3 + [2] * 1
    # exact shares 3, 1.5, 0.5 -> floors 3, 1, 0; one left over, tie goes to the lower class
    idx = stratified_indices(targets, 5, seed=0)
    assert torch.bincount(torch.tensor(targets)[idx], minlength=3).tolist() == [3, 2, 0]
    assert idx.tolist() == sorted(set(idx.tolist()))
    assert torch.equal(stratified_indices(targets, 5, seed=0), idx)
    assert stratified_indices(targets, 10, seed=3).tolist() == list(range(10))
    with pytest.raises(ValueError, match="subset=11"):
        stratified_indices(targets, 11)
    with pytest.raises(ValueError, match="subset=0"):
        stratified_indices(targets, 0)


def test_subset_is_stratified_seeded_and_a_true_subset() -> None:
    full = load_dataset("fake")
    sub = load_dataset("fake", subset=100, seed=1)
    counts = torch.bincount(full.targets, minlength=10)
    got = torch.bincount(sub.targets, minlength=10)
    share = counts.double() * 100 / 1000
    assert bool(((got == share.floor()) | (got == share.ceil())).all()) and int(got.sum()) == 100
    # largest remainders: shares 9.0 12.0 8.7 10.5 8.2 9.4 11.1 9.2 11.5 10.4 -> +1 for classes 2, 3, 8
    assert counts.tolist() == [90, 120, 87, 105, 82, 94, 111, 92, 115, 104]
    assert got.tolist() == [9, 12, 9, 11, 8, 9, 11, 9, 12, 10]
    assert len(sub) == 100 and sub.classes == full.classes
    assert torch.equal(load_dataset("fake", subset=100, seed=1).images, sub.images)
    assert not torch.equal(load_dataset("fake", subset=100, seed=2).images, sub.images)
    rows = {bytes(full.images[i].numpy()): int(full.targets[i]) for i in range(len(full))}
    assert all(rows[bytes(sub.images[i].numpy())] == int(sub.targets[i]) for i in range(len(sub)))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        load_dataset("fake", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet-1k-not-here")
    with pytest.raises(TypeError, match="subset"):
        load_dataset("fake", subset=10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subset=5000"):
        load_dataset("fake", subset=5000)
    with pytest.raises(ValueError, match="in_memory=False"):
        load_dataset("fake", in_memory=False)
    with pytest.raises(TypeError, match="image_size"):
        load_dataset("fake", image_size="32")  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["cifar10", "cifar100"])
def test_missing_cifar_says_how_to_get_it(spec: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset(spec, root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created
    folder = "cifar-10-batches-py" if spec == "cifar10" else "cifar-100-python"
    (tmp_path / folder).mkdir()  # present but without the (checksummed) batch files
    with pytest.raises(FileNotFoundError, match="corrupted"):
        load_dataset(spec, root=tmp_path)


# --------------------------------------------------------------------------------------------------
# ImageFolder trees and the decode cache


def test_split_tree_decodes_like_imagefolder(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    _write_tree(root / "train", {"b_cls": 5, "a_cls": 4}, seed=0)
    _write_tree(root / "test", {"b_cls": 2, "a_cls": 3}, seed=1)
    cache = tmp_path / "cache"
    for split, n in (("train", 9), ("test", 5)):
        ds = load_dataset(root, split, cache_dir=cache)
        ref = ImageFolder(str(root / split), transform=T.PILToTensor())
        assert isinstance(ds, InMemoryImageDataset) and len(ds) == n
        assert ds.classes == ref.classes == ["a_cls", "b_cls"]
        for i in range(n):
            assert torch.equal(ds[i][0], ref[i][0]) and ds[i][1] == ref[i][1]
    assert ds.mean != CIFAR10_MEAN  # not CIFAR-10 classes: ImageNet statistics


def test_pil_fallback_gives_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write_tree(tmp_path / "tree", {"a": 3, "b": 2})
    fast = load_dataset(root, cache=False)
    monkeypatch.setattr(datasets_module, "_torchvision_decoder", lambda: None)
    slow = load_dataset(root, cache=False)
    assert torch.equal(fast.images, slow.images) and torch.equal(fast.targets, slow.targets)


def test_plain_tree_serves_both_splits(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "plain", {"x": 3, "y": 3})
    train = load_dataset(root, "train", cache_dir=tmp_path / "c")
    test = load_dataset(root, "test", cache_dir=tmp_path / "c")
    assert torch.equal(train.images, test.images) and len(train) == 6


def test_half_split_tree_is_an_error(tmp_path: Path) -> None:
    _write_tree(tmp_path / "half" / "train", {"x": 2})
    with pytest.raises(FileNotFoundError, match="test/"):
        load_dataset(tmp_path / "half", "test", cache_dir=tmp_path / "c")


def test_decode_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _write_tree(tmp_path / "tree", {"a": 4, "b": 4})
    cache = tmp_path / "cache"
    first = load_dataset(root, cache_dir=cache)
    files = list((cache / "decoded").glob("*.pt"))
    assert len(files) == 1

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(datasets_module, "_decode_files", no_decode)
        hit = load_dataset(root, cache_dir=cache)
    assert torch.equal(hit.images, first.images) and torch.equal(hit.targets, first.targets)
    assert hit.classes == first.classes

    # rewrite one file (new pixels, new mtime): the cache entry no longer matches and the tree is decoded
    target = root / "b" / "001.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(target)
    os.utime(target, ns=(10**18, 10**18))
    fresh = load_dataset(root, cache_dir=cache)
    assert int(fresh.images[5].sum()) == 0 and not torch.equal(fresh.images, first.images)
    assert len(list((cache / "decoded").glob("*.pt"))) == 2
    # cache=False decodes without touching the cache folder
    assert torch.equal(load_dataset(root, cache=False, cache_dir=tmp_path / "none").images, fresh.images)
    assert not (tmp_path / "none").exists()


def test_corrupt_cache_is_redecoded_with_a_warning(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "tree", {"a": 2, "b": 2})
    first = load_dataset(root, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c" / "decoded").glob("*.pt")
    entry.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable decode cache"):
        again = load_dataset(root, cache_dir=tmp_path / "c")
    assert torch.equal(again.images, first.images)


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mixed", {"a": 2}, size=16)
    _write_tree(root, {"b": 2}, size=(20, 12), seed=5)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset(root, cache_dir=tmp_path / "c")
    ds = load_dataset(root, image_size=8, cache_dir=tmp_path / "c")
    assert ds.images.shape == (4, 3, 8, 8)


def test_large_images_stay_lazy(tmp_path: Path) -> None:
    root = tmp_path / "big"
    _write_tree(root / "train", {"a": 6, "b": 4}, size=80)
    _write_tree(root / "test", {"a": 2, "b": 2}, size=80, seed=1)
    train = load_dataset(root, "train", image_size=72)
    test = load_dataset(root, "test", image_size=72)
    assert isinstance(train, LazyImageFolder) and train.loader_augments and not test.loader_augments
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 72, 72) and label == 0
    assert test[3][0].shape == (3, 72, 72)
    # center crop of the test transform is deterministic
    assert torch.equal(test[1][0], test[1][0])
    sub = load_dataset(root, "train", image_size=72, subset=5)
    assert isinstance(sub, ClassSubset) and sorted(sub.targets) == [0, 0, 0, 1, 1]
    assert sub.num_classes == 2 and sub.mean == train.mean
    # small images can be forced lazy: no per-sample augmentation then
    small = load_dataset(_write_tree(tmp_path / "small", {"a": 2}), in_memory=False)
    assert isinstance(small, LazyImageFolder) and not small.loader_augments and small[0][0].shape == (3, 16, 16)
    batch = next(iter(make_loader(train, 4, num_workers=0)))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (4, 3, 72, 72)
    augment = default_augment(train, train=True)
    assert augment.crop is None and augment.flip is None  # done per sample by the dataset
    assert to_device_batch(batch, "cpu", augment)[0].dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# the real CIFAR-10 tree


@needs_cifar
def test_cifar10_tree_test_split() -> None:
    test = load_dataset(CIFAR, "test")  # decoded once per machine, then read from ~/.cache/rartsprune
    assert isinstance(test, InMemoryImageDataset)
    assert test.images.shape == (8000, 3, 32, 32)
    assert test.classes == list(CIFAR10_CLASSES) == TORCHVISION_CIFAR10_ORDER
    assert torch.bincount(test.targets).tolist() == [800] * 10
    assert test.mean == CIFAR10_MEAN and test.std == CIFAR10_STD
    ref = ImageFolder(str(CIFAR / "test"), transform=T.PILToTensor())
    for i in (0, 799, 800, 4321, 7999):
        assert torch.equal(test[i][0], ref[i][0]) and test[i][1] == ref[i][1]
    again = load_dataset(CIFAR, "test")  # cache hit
    assert torch.equal(again.images, test.images) and torch.equal(again.targets, test.targets)
    sub = load_dataset(CIFAR, "test", subset=1000, seed=0)
    assert torch.bincount(sub.targets).tolist() == [100] * 10


@needs_cifar
def test_cifar10_tree_train_split() -> None:
    train = load_dataset(CIFAR, "train")
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.targets).tolist() == [5000] * 10
    assert train.classes == TORCHVISION_CIFAR10_ORDER
    ref = ImageFolder(str(CIFAR / "train"), transform=T.PILToTensor())
    for i in (0, 12345, 49999):
        assert torch.equal(train[i][0], ref[i][0]) and train[i][1] == ref[i][1]
    sub = load_dataset(CIFAR, "train", subset=500, seed=3)
    assert torch.bincount(sub.targets).tolist() == [50] * 10


# --------------------------------------------------------------------------------------------------
# batch augmentation


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=_gen(seed))


def test_normalize_matches_torchvision() -> None:
    x = _batch(4)
    ours = Normalize(CIFAR10_MEAN, CIFAR10_STD)(x)
    ref = torch.stack([T.Normalize(CIFAR10_MEAN, CIFAR10_STD)(img.float() / 255) for img in x])
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(Normalize(CIFAR10_MEAN, CIFAR10_STD)(x.float() / 255), ref, atol=1e-6, rtol=0)
    assert Normalize(CIFAR10_MEAN, CIFAR10_STD, dtype=torch.float64)(x).dtype == torch.float64
    with pytest.raises(ValueError, match="channels"):
        Normalize((0.5,), (0.5,))(x)
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5,), (0.0,))


def test_random_crop_is_a_padded_crop() -> None:
    x = _batch(32)
    out = RandomCropPad(4, generator=_gen())(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(padded[i, :, dy : dy + 32, dx : dx + 32], out[i])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # offsets vary across the batch
    assert torch.equal(RandomCropPad(0)(x), x)


def test_flip_and_cutout() -> None:
    x = _batch(400)
    out = RandomHorizontalFlip(generator=_gen())(x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped ^ kept).all()) and 0.4 < flipped.float().mean() < 0.6
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1)) and torch.equal(RandomHorizontalFlip(p=0.0)(x), x)

    ones = torch.ones(400, 3, 32, 32)
    cut = Cutout(16, generator=_gen())(ones)
    for img in cut:
        zero = img[0] == 0
        assert torch.equal(zero, img[1] == 0) and torch.equal(zero, img[2] == 0)  # same square in all channels
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 8 <= h <= 16 and 8 <= w <= 16 and int(zero.sum()) == h * w  # one (clipped) 16x16 square
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w
    sizes = torch.tensor([int((img[0] == 0).sum()) for img in cut])
    assert (sizes == 256).any() and (sizes < 256).any()
    assert torch.equal(Cutout(16, p=0.0)(ones), ones)


def test_cifar_augment_ranges_and_determinism() -> None:
    x = _batch(64)
    aug = cifar_augment(train=True, cutout=True, generator=_gen(7))
    out = aug(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    low = torch.tensor([-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]).view(1, 3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]).view(1, 3, 1, 1)
    assert bool((out >= low - 1e-5).all()) and bool((out <= high + 1e-5).all())
    assert bool((out == 0).any())  # cutout fills with 0 = the mean colour
    again = cifar_augment(train=True, cutout=True, generator=_gen(7))(x)
    assert torch.equal(out, again)
    assert not torch.equal(out, cifar_augment(train=True, cutout=True, generator=_gen(8))(x))
    # a generator passed to forward overrides the modules' own
    plain = cifar_augment(train=True)
    assert torch.equal(plain(x, _gen(3)), plain(x, _gen(3)))
    # test-time pipeline is normalisation only
    torch.testing.assert_close(cifar_augment(train=False)(x), Normalize(CIFAR10_MEAN, CIFAR10_STD)(x))


def test_default_augment_reads_the_dataset() -> None:
    ds = load_dataset("fake")
    train_aug = default_augment(ds, train=True, cutout=True)
    assert train_aug.crop.padding == 4 and train_aug.cutout.length == 16
    assert train_aug.normalize.mean == CIFAR10_MEAN
    test_aug = default_augment(ds, train=False)
    assert test_aug.crop is None and test_aug.flip is None and test_aug.cutout is None


# --------------------------------------------------------------------------------------------------
# loaders


def _indexed_dataset(n: int = 100) -> InMemoryImageDataset:
    """Images whose first two pixels store their own index."""
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    return InMemoryImageDataset(images, torch.arange(n) % 10, [str(i) for i in range(10)], name="indexed")


def _order(loader: object) -> list[int]:
    out = []
    for images, labels in loader:  # type: ignore[attr-defined]
        idx = images[:, 0, 0, 0].long() * 256 + images[:, 0, 0, 1].long()
        assert torch.equal(labels, idx % 10)  # labels travel with their images
        out += idx.tolist()
    return out


def test_in_memory_loader_batches() -> None:
    ds = _indexed_dataset(100)
    train = make_loader(ds, 32, seed=5)
    assert len(train) == 3  # drop_last for training
    epoch1, epoch2 = _order(train), _order(train)
    assert len(epoch1) == 96 and len(set(epoch1)) == 96 and epoch1 != epoch2
    assert _order(make_loader(ds, 32, seed=5)) == epoch1  # same seed, same order
    evaluation = make_loader(ds, 32, train=False)
    assert len(evaluation) == 4 and _order(evaluation) == list(range(100))
    images, labels = next(iter(evaluation))
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64 and images.shape == (32, 3, 4, 4)
    sampler = torch.utils.data.SubsetRandomSampler(list(range(10)), generator=_gen())
    assert sorted(_order(make_loader(ds, 4, sampler=sampler, drop_last=False))) == list(range(10))
    with pytest.raises(ValueError, match="sampler"):
        make_loader(ds, 4, sampler=sampler, shuffle=True)
    half = torch.utils.data.Subset(ds, list(range(50, 100)))
    half_loader = make_loader(half, 10, train=False)
    assert half_loader.batch_size is None  # batch slicing path, not per-item collation
    assert _order(half_loader) == list(range(50, 100))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)


def test_to_device_batch_and_device_loader() -> None:
    ds = load_dataset("fake", "test")
    aug = default_augment(ds, train=False)
    batch = next(iter(make_loader(ds, 50, train=False)))
    x, y = to_device_batch(batch, "cpu", aug, memory_format=torch.channels_last)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    torch.testing.assert_close(x, aug(ds.images[:50]))
    assert torch.equal(y, ds.targets[:50])
    plain, _ = to_device_batch(batch, torch.device("cpu"))
    assert float(plain.max()) <= 1.0 and plain.dtype == torch.float32
    loader = DeviceLoader(make_loader(ds, 64, train=False), "cpu", aug)
    seen = [(xb.shape[0], yb) for xb, yb in loader]
    assert len(loader) == len(seen) == 4 and sum(n for n, _ in seen) == 200
    assert torch.equal(torch.cat([yb for _, yb in seen]), ds.targets)
    with pytest.raises(TypeError, match="pair"):
        to_device_batch(batch[0], "cpu")  # type: ignore[arg-type]
