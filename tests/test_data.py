"""Captioned Moving MNIST: determinism, captions that tell the truth, splits, bad input."""

import numpy as np
import pytest
import torch

from minimagic.data import (
    DIRECTION_NAMES,
    DIRECTIONS,
    NUMBER_WORDS,
    MovingDigits,
    MovingMNISTFile,
    caption_for,
    load_digits,
    parse_caption,
)
from minimagic.metrics import centroid_path as centroids


def test_same_seed_and_index_give_the_same_clip_and_other_seeds_differ():
    a, b, c = MovingDigits(seed=1)[5], MovingDigits(seed=1)[5], MovingDigits(seed=2)[5]
    assert torch.equal(a["video"], b["video"]) and a["caption"] == b["caption"]
    assert not torch.equal(a["video"], c["video"])


def test_item_shapes_range_and_caption_grammar():
    item = MovingDigits(num_frames=5, size=48)[0]
    assert item["video"].shape == (5, 1, 48, 48)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and item["video"].max() > 0
    assert item["caption"] == f"the digit {NUMBER_WORDS[item['digit']]} moves {DIRECTION_NAMES[item['direction']]}"
    image = MovingDigits(image_mode=True)[0]
    assert image["image"].shape == (1, 64, 64) and image["caption"] == f"the digit {NUMBER_WORDS[image['digit']]}"


def test_the_digit_moves_in_the_captioned_direction_in_every_clip():
    data = MovingDigits("train", length=400)
    for i in range(len(data)):
        item = data[i]
        path = centroids(item["video"])
        moved = path[-1] - path[0]
        unit = torch.tensor(DIRECTIONS[DIRECTION_NAMES[item["direction"]]], dtype=torch.float)
        cosine = moved @ unit / (moved.norm() * unit.norm())
        assert cosine > 0.95, (i, item["caption"], moved)
        assert 0.8 * 3.0 * 7 < moved.norm() < 1.2 * 3.0 * 7  # constant speed 3 px/frame over 7 steps


def test_all_directions_and_digits_appear():
    data = MovingDigits(length=400)
    items = [data[i] for i in range(len(data))]
    assert {item["direction"] for item in items} == set(range(8))
    assert {item["digit"] for item in items} == set(range(10))


def test_long_clips_bounce_and_stay_on_the_canvas():
    item = MovingDigits(num_frames=40, speed=4.0)[3]
    assert item["video"].shape == (40, 1, 64, 64)
    path = centroids(item["video"])
    assert path.min() > 0 and path.max() < 64
    steps = path[1:] - path[:-1]
    assert (steps @ steps[0] < 0).any(), "a 40-frame clip at 4 px/frame must bounce at least once"


def test_train_and_test_digits_are_disjoint():
    train, _ = load_digits("train")
    test, test_labels = load_digits("test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(test_labels).tolist() == [100] * 10
    train_set = {bytes(image.numpy()) for image in train}
    assert not any(bytes(image.numpy()) in train_set for image in test)


def test_two_digits_and_caption_round_trip():
    item = MovingDigits(num_digits=2)[0]
    assert item["caption"].count("the digit") == 2
    expected = list(zip(item["digits"].tolist(), item["directions"].tolist(), strict=True))
    assert parse_caption(item["caption"]) == expected
    assert parse_caption(caption_for([7], [4])) == [(7, 4)]


def test_classic_moving_mnist_file(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", array)
    data = MovingMNISTFile(tmp_path / "mnist_test_seq.npy")
    assert len(data) == 3
    video = data[1]["video"]
    assert video.shape == (20, 1, 64, 64)
    assert torch.allclose((video[:, 0] + 1) * 127.5, torch.from_numpy(array[:, 1]).float(), atol=1e-3)


def test_torchvision_mnist_files_give_all_digits(tmp_path):
    from torchvision.datasets import MNIST

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = load_digits("test")

    def write_idx(path, array, magic):
        header = np.array([magic, *array.shape], dtype=">i4").tobytes()
        path.write_bytes(header + array.astype(np.uint8).tobytes())

    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images.numpy(), 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.numpy(), 2049)
    assert len(MNIST(str(tmp_path), train=False)) == 1000
    loaded, loaded_labels = load_digits("test", mnist_root=tmp_path)
    assert torch.equal(loaded, images) and torch.equal(loaded_labels, labels)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(size=20), "smaller than"),
        (dict(num_frames=0), "num_frames"),
        (dict(num_digits=3), "num_digits"),
    ],
)
def test_impossible_configs_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MovingDigits(**options)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown direction"):
        parse_caption("the digit seven moves sideways")
    with pytest.raises(ValueError, match="unknown number word"):
        parse_caption("the digit eleven moves left")
    with pytest.raises(ValueError, match="does not follow"):
        parse_caption("a cat")
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
    with pytest.raises(FileNotFoundError, match="not found"):
        MovingMNISTFile(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="no MNIST files"):
        load_digits("train", mnist_root=tmp_path)
    with pytest.raises(IndexError):
        MovingDigits(length=3)[3]
