"""kdforge.compress.data: splits, normalisation, deterministic augmentation and loaders of every data set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from kdforge.compress.config import DataConfig
from kdforge.compress.data import (
    DataBundle,
    EpochLoader,
    SeededAugment,
    TensorImages,
    build_data,
    stratified_split,
)
from kdforge.compress.data.augment import sample_hashes, shift_flip
from kdforge.compress.data.digits import load_raw
from kdforge.compress.errors import UserError
from PIL import Image

from tests.cifar_files import fake_cifar10, fake_cifar100

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return build_data(DataConfig())


def _labels(ds: TensorImages) -> np.ndarray:
    return ds.labels.numpy()


def _all(ds) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, TensorImages):
        return ds.batch(range(len(ds)))
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def _epoch(loader: EpochLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(epoch)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------------------------------
# digits: splits
# --------------------------------------------------------------------------------------------------


def test_digits_load_matches_sklearn() -> None:
    from sklearn.datasets import load_digits

    images, labels = load_raw()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


def test_digits_splits_partition_the_data_set(digits: DataBundle) -> None:
    train, val, test = (set(ds.indices.tolist()) for ds in (digits.train, digits.val, digits.test))
    assert len(digits.train) + len(digits.val) + len(digits.test) == N_DIGITS
    assert len(train) == len(digits.train) and len(val) == len(digits.val) and len(test) == len(digits.test)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(N_DIGITS))
    assert len(test) == pytest.approx(0.2 * N_DIGITS, abs=6)
    assert len(val) == pytest.approx(0.1 * (N_DIGITS - len(test)), abs=6)
    assert digits.num_classes == 10 and digits.classes == [str(d) for d in range(10)]
    assert not digits.val_is_test
    _, all_labels = load_raw()
    for ds in (digits.train, digits.val, digits.test):  # labels follow the source indices
        assert np.array_equal(_labels(ds), all_labels[ds.indices])


def test_digits_splits_are_stratified(digits: DataBundle) -> None:
    _, all_labels = load_raw()
    overall = np.bincount(all_labels, minlength=10) / N_DIGITS
    for ds in (digits.train, digits.val, digits.test):
        share = np.bincount(_labels(ds), minlength=10) / len(ds)
        assert np.abs(share - overall).max() < 0.01


def test_digits_split_depends_on_split_seed_only(digits: DataBundle) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    again = build_data(DataConfig(batch_size=7, augment=False))
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        assert np.array_equal(a.indices, b.indices)
    other = build_data(DataConfig(split_seed=1))
    assert not np.array_equal(other.test.indices, digits.test.indices)
    assert not np.array_equal(other.val.indices, digits.val.indices)
    assert len(other.test) == len(digits.test)


def test_digits_train_fraction_keeps_a_stratified_share(digits: DataBundle) -> None:
    small = build_data(DataConfig(train_fraction=0.25))
    assert np.array_equal(small.val.indices, digits.val.indices)  # val and test do not move
    assert np.array_equal(small.test.indices, digits.test.indices)
    assert set(small.train.indices.tolist()) < set(digits.train.indices.tolist())
    assert len(small.train) == pytest.approx(0.25 * len(digits.train), abs=6)
    counts = np.bincount(_labels(small.train), minlength=10)
    full = np.bincount(_labels(digits.train), minlength=10)
    assert np.all(np.abs(counts - 0.25 * full) <= 1)
    tiny = build_data(DataConfig(train_fraction=0.001))
    assert np.array_equal(np.bincount(_labels(tiny.train), minlength=10), np.ones(10))  # >= 1 per class


def test_val_fraction_zero_validates_on_test() -> None:
    bundle = build_data(DataConfig(val_fraction=0.0))
    assert bundle.val_is_test and bundle.val is bundle.test
    assert len(bundle.train) + len(bundle.test) == N_DIGITS


def test_stratified_split_edge_cases() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    taken, left = stratified_split(labels, 0.5, seed=0, stage=0, min_left=1)
    assert sorted([*taken, *left]) == list(range(7))
    assert np.bincount(labels[taken], minlength=3).tolist() == [2, 0, 1]  # class 1 keeps its only sample
    taken, _ = stratified_split(labels, 0.01, seed=0, stage=0, min_taken=1)
    assert np.bincount(labels[taken], minlength=3).tolist() == [1, 1, 1]
    assert not np.array_equal(
        stratified_split(np.zeros(50), 0.5, seed=0, stage=0)[0],
        stratified_split(np.zeros(50), 0.5, seed=0, stage=1)[0],
    )


# --------------------------------------------------------------------------------------------------
# digits: tensors and normalisation
# --------------------------------------------------------------------------------------------------


def test_digits_shapes_and_image_size(digits: DataBundle) -> None:
    x, y = digits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert digits.input_shape == (3, 32, 32)
    small = build_data(DataConfig(image_size=16))
    assert small.input_shape == (3, 16, 16)
    for ds in (small.train, small.val, small.test):
        assert ds[0][0].shape == (3, 16, 16)
    assert small.train.pad == 2


def test_digits_normalised_train_split_has_zero_mean_unit_std() -> None:
    bundle = build_data(DataConfig(augment=False))
    x, _ = _all(bundle.train)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert bundle.mean[0] == bundle.mean[1] == bundle.mean[2]  # grey repeated to 3 channels
    assert 0.2 < bundle.mean[0] < 0.4


# --------------------------------------------------------------------------------------------------
# deterministic augmentation
# --------------------------------------------------------------------------------------------------


def _is_shift_of(aug: torch.Tensor, clean: torch.Tensor, fill: torch.Tensor, pad: int, flips: bool) -> bool:
    _, h, w = clean.shape
    padded = fill.view(3, 1, 1).expand(3, h + 2 * pad, w + 2 * pad).clone()
    padded[:, pad : pad + h, pad : pad + w] = clean
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            for candidate in (crop, crop.flip(-1)) if flips else (crop,):
                if torch.allclose(candidate, aug, atol=1e-5):
                    return True
    return False


def test_shift_flip_matches_torchvision_crop_then_flip() -> None:
    import torchvision.transforms.functional as TF

    x = torch.randint(0, 256, (16, 3, 12, 10), dtype=torch.uint8)
    dy, dx = torch.randint(0, 7, (16,)), torch.randint(0, 7, (16,))
    flip = torch.arange(16) % 2 == 0
    out = shift_flip(x, dy, dx, flip, 3)
    for i in range(16):
        expected = TF.crop(TF.pad(x[i], [3]), int(dy[i]), int(dx[i]), 12, 10)
        assert torch.equal(out[i], TF.hflip(expected) if flip[i] else expected)


def test_digits_augmentation_is_a_small_shift_without_flip(digits: DataBundle) -> None:
    clean = build_data(DataConfig(augment=False)).train
    assert digits.train.augmented and not clean.augmented and not digits.train.flip
    fill = -torch.tensor(digits.mean) / torch.tensor(digits.std)  # black padding, then normalised
    moved = 0
    for i in range(12):
        aug, label = digits.train[i]
        reference, ref_label = clean[i]
        assert label == ref_label
        assert _is_shift_of(aug, reference, fill, pad=4, flips=False)
        moved += not torch.equal(aug, reference)
    assert moved >= 8


def test_augmentation_is_a_pure_function_of_seed_epoch_index(digits: DataBundle) -> None:
    ds = digits.train.reseeded(5)
    ds.set_epoch(3)
    first = ds.batch([0, 1, 2, 3])[0]
    assert torch.equal(ds.batch([3, 2, 1, 0])[0], first.flip(0))  # independent of batch composition
    assert torch.equal(torch.stack([ds[i][0] for i in range(4)]), first)
    ds.set_epoch(4)
    assert not torch.equal(ds.batch([0, 1, 2, 3])[0], first)
    assert digits.train.seed == 0 and digits.train.epoch == 0  # the copy left the bundle's dataset alone
    assert not np.array_equal(sample_hashes(5, 3, [0, 1]), sample_hashes(6, 3, [0, 1]))


def test_loader_augmentation_independent_of_workers_and_global_rng() -> None:
    cfg = DataConfig(batch_size=128, train_fraction=0.3)
    serial = build_data(cfg).loader("train", seed=7)
    state = torch.get_rng_state()
    x1, y1 = _epoch(serial, 1)
    x2, _ = _epoch(serial, 2)
    assert torch.equal(torch.get_rng_state(), state)  # the trainer's RNG stream is untouched
    assert not torch.equal(x1, x2)
    cfg.workers = 2
    parallel = build_data(cfg).loader("train", seed=7)
    px1, py1 = _epoch(parallel, 1)
    assert torch.equal(px1, x1) and torch.equal(py1, y1)
    other_seed = build_data(DataConfig(batch_size=128, train_fraction=0.3)).loader("train", seed=8)
    assert not torch.equal(_epoch(other_seed, 1)[1], y1)  # the order follows the seed
    cpus = len(os.sched_getaffinity(0))  # more loader processes than CPUs only contend: capped, no warning
    assert build_data(DataConfig(workers=cpus + 3)).loader("train", seed=7).num_workers == cpus


def test_an_epoch_resumed_at_a_batch_yields_exactly_the_rest_of_that_epoch(digits: DataBundle) -> None:
    loader = digits.loader("train", seed=3)
    loader.set_epoch(4)
    full = list(loader)
    loader.set_epoch(4, start_batch=2)
    rest = list(loader)
    assert len(rest) == len(full) - 2 and len(loader) == len(full) - 2
    for (x, y), (fx, fy) in zip(rest, full[2:], strict=True):
        assert torch.equal(x, fx) and torch.equal(y, fy), "same order, same augmentation draws"
    loader.set_epoch(5)
    assert len(list(loader)) == len(full), "the next epoch starts from its first batch"


def test_train_loader_set_epoch_and_settings(digits: DataBundle) -> None:
    loader = digits.loader("train", seed=3)
    assert loader.batch_size == 64 and loader.num_workers == 0 and not loader.pin_memory
    assert not loader.drop_last and loader.persistent_workers is False
    loader.set_epoch(5)
    assert loader.sampler.epoch == 5 and loader.dataset.epoch == 5 and loader.dataset.seed == 3
    assert loader.dataset is not digits.train and digits.train.epoch == 0
    order5 = list(loader.sampler)
    loader.set_epoch(6)
    assert list(loader.sampler) != order5
    loader.set_epoch(5)
    assert list(loader.sampler) == order5
    assert sorted(order5) == list(range(len(digits.train)))
    with pytest.raises(ValueError):
        digits.loader("training", seed=0)  # type: ignore[arg-type]


def test_eval_loaders_cover_every_sample_once(digits: DataBundle) -> None:
    digits.eval_batch_size = 100
    try:
        for split in ("val", "test"):
            dataset = getattr(digits, split)
            loader = digits.loader(split, seed=1)
            assert loader.batch_size == 100
            assert list(loader.sampler) == list(range(len(dataset)))
            x, y = _epoch(loader, 4)
            assert len(y) == len(dataset)
            expected_x, expected_y = _all(dataset)
            assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    finally:
        digits.eval_batch_size = 256


def test_distributed_ranks_cover_the_train_set(digits: DataBundle) -> None:
    n = len(digits.train)
    ranks = [digits.loader("train", seed=2, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        loader.set_epoch(1)
    parts = [list(loader.sampler) for loader in ranks]
    assert len(parts[0]) == len(parts[1]) == (n + 1) // 2
    assert set(parts[0]) | set(parts[1]) == set(range(n))
    assert len(set(parts[0]) & set(parts[1])) == (2 - n % 2) % 2  # padding repeats one sample if n is odd
    assert sum(len(y) for _, y in ranks[0]) == (n + 1) // 2


# --------------------------------------------------------------------------------------------------
# CIFAR, in the real on-disk pickle format
# --------------------------------------------------------------------------------------------------


def test_cifar10_reads_the_official_format(tmp_path: Path) -> None:
    written = fake_cifar10(tmp_path)
    bundle = build_data(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2, image_size=24))
    assert bundle.num_classes == 10 and bundle.classes[0] == "airplane" and bundle.classes[9] == "truck"
    assert len(bundle.train) + len(bundle.val) == 100 and len(bundle.val) == 20 and len(bundle.test) == 20
    assert np.bincount(bundle.val.labels.numpy(), minlength=10).tolist() == [2] * 10
    assert bundle.input_shape == (3, 32, 32) and bundle.train[0][0].shape == (3, 32, 32)
    assert bundle.mean == (0.4914, 0.4822, 0.4465) and bundle.std == (0.2470, 0.2435, 0.2616)
    assert np.array_equal(bundle.test.labels.numpy(), written["test_batch_labels"])
    all_train_labels = np.concatenate([written[f"data_batch_{i}_labels"] for i in range(1, 6)])
    assert np.array_equal(bundle.train.labels.numpy(), all_train_labels[bundle.train.indices])
    x, y = bundle.test[3]  # rows are planar R, G, B planes of 32x32
    raw = torch.from_numpy(written["test_batch_data"][3].reshape(3, 32, 32)).float() / 255
    expected = (raw - torch.tensor(bundle.mean).view(3, 1, 1)) / torch.tensor(bundle.std).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5) and y == written["test_batch_labels"][3]
    # paper augmentation: shifts of up to 4 px and horizontal flips
    assert bundle.train.pad == 4 and bundle.train.flip
    clean = build_data(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2, augment=False)).train
    fill = -torch.tensor(bundle.mean) / torch.tensor(bundle.std)
    for i in range(6):
        assert _is_shift_of(bundle.train[i][0], clean[i][0], fill, pad=4, flips=True)
    flips = [(h >> np.uint64(32)) & np.uint64(1) for h in sample_hashes(0, 0, range(40))]
    assert 0 < sum(int(f) for f in flips) < 40


def test_cifar100_and_paper_protocol(tmp_path: Path) -> None:
    test_labels = fake_cifar100(tmp_path)
    bundle = build_data(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.0))
    assert bundle.num_classes == 100 and bundle.classes[5] == "class005"
    assert len(bundle.train) == 400 and len(bundle.test) == 100 and bundle.val is bundle.test
    assert np.array_equal(bundle.test.labels.numpy(), test_labels)
    assert bundle.mean == (0.5071, 0.4865, 0.4409)
    held = build_data(DataConfig(name="cifar100", root=str(tmp_path / "cifar-100-python"), val_fraction=0.25))
    assert len(held.val) == 100 and len(held.train) == 300  # root may also name the extracted folder
    half = build_data(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.25, train_fraction=0.5))
    assert np.bincount(half.train.labels.numpy(), minlength=100).tolist() == [2] * 100


def test_cifar_missing_or_broken_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="put the extracted 'cifar-100-python' folder there"):
        build_data(DataConfig(name="cifar100", root=str(tmp_path)))
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="'data_batch_3' is missing"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a CIFAR python pickle"):
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(UserError, match=r"data\.root"):
        build_data(DataConfig(name="cifar10", root=None))


# --------------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------------


def _image_tree(root: Path, counts: dict[str, dict[str, int]]) -> None:
    rng = np.random.default_rng(0)
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if i == 0:
                    image.convert("L").save(folder / f"{i}.png")  # grey: must come out as RGB
                elif i == 1:
                    image.save(folder / f"{i}.jpg")
                else:
                    image.save(folder / f"{i}.png")


def test_imagefolder_splits_and_shapes(tmp_path: Path) -> None:
    _image_tree(tmp_path, {"train": {"cat": 10, "dog": 10}, "val": {"cat": 2, "dog": 3}})
    bundle = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, val_fraction=0.2))
    assert bundle.classes == ["cat", "dog"] and bundle.num_classes == 2
    assert len(bundle.train) == 16 and len(bundle.val) == 4 and len(bundle.test) == 5
    assert not set(bundle.train.indices) & set(bundle.val.indices)
    assert bundle.input_shape == (3, 16, 16) and bundle.mean == (0.485, 0.456, 0.406)
    for ds in (bundle.train, bundle.val, bundle.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y in (0, 1)
    assert [bundle.test[i][1] for i in range(5)] == [0, 0, 1, 1, 1]
    assert isinstance(bundle.train, SeededAugment)
    state = torch.get_rng_state()
    loader = bundle.loader("train", seed=4)
    a, b, c = _epoch(loader, 1), _epoch(loader, 1), _epoch(loader, 2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(torch.get_rng_state(), state)
    plain = build_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, augment=False))
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_imagefolder_user_errors(tmp_path: Path) -> None:
    _image_tree(tmp_path, {"train": {"cat": 3, "dog": 3}})
    with pytest.raises(UserError, match=r"val not found"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    _image_tree(tmp_path, {"val": {"cat": 1, "fox": 1}})
    with pytest.raises(UserError, match=r"only in train: dog; only in val: fox"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="put images in"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path / "empty")))


def test_eval_shards_cover_every_sample_exactly_once_without_padding() -> None:
    from kdforge.compress.data import build_data

    bundle = build_data(DataConfig(image_size=8, eval_batch_size=7))
    seen: list[int] = []
    for rank in range(3):
        loader = bundle.loader("test", seed=0, rank=rank, world_size=3)
        seen.extend(loader.sampler)
        assert sum(len(labels) for _, labels in loader) == len(loader.sampler)
    assert sorted(seen) == list(range(len(bundle.test)))
