import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.metadata import FASHION_MNIST_CLASSES
from tests.conftest import synthetic_images
from training.custom_dataset import CustomImageDataset
from training.data import load_fashion_mnist, prepare_fashion_mnist, stratified_split
from training.errors import DatasetError


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_fashion_mnist_reads_from_a_read_only_folder_offline(fake_data_dir: Path, tmp_path: Path) -> None:
    before = snapshot(fake_data_dir)
    fake_data_dir.chmod(0o555)
    try:
        root = prepare_fashion_mnist(fake_data_dir, tmp_path / "cache", verify=False)
        images, labels = load_fashion_mnist(root, train=True)
        test_images, test_labels = load_fashion_mnist(root, train=False)
    finally:
        fake_data_dir.chmod(0o755)
    expected, expected_labels = synthetic_images(300, seed=1)
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert test_images.shape == (100, 28, 28) and len(test_labels) == 100
    assert snapshot(fake_data_dir) == before  # nothing extracted or cached beside the .gz files
    assert root.is_relative_to(tmp_path / "cache")


def test_the_cache_is_reused(fake_data_dir: Path, tmp_path: Path) -> None:
    first = prepare_fashion_mnist(fake_data_dir, tmp_path / "cache", verify=False)
    extracted = first / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    stamp = extracted.stat().st_mtime_ns
    assert prepare_fashion_mnist(fake_data_dir, tmp_path / "cache", verify=False) == first
    assert extracted.stat().st_mtime_ns == stamp


def test_md5_is_checked_and_a_mismatch_names_the_file(fake_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: MD5 .* is not the published"):
        prepare_fashion_mnist(fake_data_dir, tmp_path / "cache")


def test_a_missing_file_names_it_and_says_how_to_get_it(fake_data_dir: Path, tmp_path: Path) -> None:
    (fake_data_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: not found.*--download"):
        prepare_fashion_mnist(fake_data_dir, tmp_path / "cache", verify=False)


def test_a_gz_that_is_not_gzip_is_named(fake_data_dir: Path, tmp_path: Path) -> None:
    (fake_data_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz: cannot decompress"):
        prepare_fashion_mnist(fake_data_dir, tmp_path / "cache", verify=False)


def test_the_real_test_set(real_data_dir: Path, tmp_path: Path) -> None:
    root = prepare_fashion_mnist(real_data_dir, tmp_path / "cache")  # MD5s verified
    images, labels = load_fashion_mnist(root, train=False)
    assert images.shape == (10_000, 28, 28)
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))


def test_stratified_split_is_exact_balanced_and_seeded() -> None:
    labels = torch.arange(1000) % 10
    train, val = stratified_split(labels, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(torch.bincount(labels[val]), torch.full((10,), 10))
    assert torch.equal(stratified_split(labels, 100, seed=3)[1], val)
    assert not torch.equal(stratified_split(labels, 100, seed=4)[1], val)


def test_stratified_split_of_zero_keeps_everything() -> None:
    train, val = stratified_split(torch.arange(50) % 10, 0, seed=0)
    assert len(train) == 50 and len(val) == 0


# --- your own images -------------------------------------------------------------


def make_image_folder(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.full((40 + i, 30), 255, dtype=np.uint8)  # any size, dark item on white
        pixels[10:30, 5 : 12 + 3 * i] = 20 * i  # of its own shape: each is stretched to the full range
        Image.fromarray(pixels).convert("RGB").save(folder / f"img{i}.png")
    return folder


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_custom_dataset_reads_indices_and_names(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["filename,label", "img0.png,0", "img1.png,Bag", "img2.png,9"])
    dataset = CustomImageDataset(csv, folder)
    assert dataset.classes == list(FASHION_MNIST_CLASSES)
    assert len(dataset) == 3
    image, label = dataset[1]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
    assert label == 8
    images, labels = dataset.to_tensors(progress=False)
    assert images.shape == (3, 28, 28) and labels.tolist() == [0, 8, 9]


def test_custom_class_names(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,cat", "img1.png,1", "img2.png,cat"])
    dataset = CustomImageDataset(csv, folder, classes=["cat", "dog"])
    assert dataset.classes == ["cat", "dog"]
    assert [dataset[i][1] for i in range(3)] == [0, 1, 0]


def test_transform_hooks_are_applied(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img0.png,3"])
    dataset = CustomImageDataset(
        csv, folder, transform=lambda x: x.float() / 255, target_transform=lambda y: torch.tensor(y)
    )
    image, label = dataset[0]
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert torch.equal(label, torch.tensor(3))


def test_custom_images_go_through_the_serving_preprocessing(tmp_path: Path) -> None:
    from models.images import decode_image, to_model_image
    from models.preprocessing import pixels_to_tensor

    folder = make_image_folder(tmp_path / "images")
    csv = write_csv(tmp_path / "labels.csv", ["img4.png,1"])
    served, inverted = to_model_image(decode_image((folder / "img4.png").read_bytes()))
    assert inverted  # white background
    assert torch.equal(CustomImageDataset(csv, folder)[0][0][0], pixels_to_tensor(served))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("missing.png,1", "line 2: image 'missing.png' not found"),
        ("img0.png,42", "line 2: unknown label '42'"),
        ("img0.png,Sock", "line 1: label '1' is an index, but other labels are names"),
        ("../outside.png,1", "line 2: '../outside.png' is not a path inside"),
        ("/etc/passwd,1", "line 2: '/etc/passwd' is not a path inside"),
        ("link.png,1", "line 2: 'link.png' leads outside"),
        ("img0.png,1,extra", "line 2: expected 'filename,label', got 3 fields"),
    ],
)
def test_bad_rows_name_the_csv_line(tmp_path: Path, row: str, message: str) -> None:
    folder = make_image_folder(tmp_path / "images")
    (tmp_path / "outside.png").write_bytes((folder / "img0.png").read_bytes())
    os.symlink(tmp_path / "outside.png", folder / "link.png")
    csv = write_csv(tmp_path / "labels.csv", ["img1.png,1", row])
    with pytest.raises(DatasetError, match=message):
        CustomImageDataset(csv, folder)


def test_an_unreadable_image_names_the_csv_line(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    csv = write_csv(tmp_path / "labels.csv", ["img1.png,1", "img2.png,2", "broken.png,3"])
    dataset = CustomImageDataset(csv, folder)
    with pytest.raises(DatasetError, match=r"labels\.csv line 3: cannot read image 'broken.png'"):
        dataset.to_tensors(progress=False)
