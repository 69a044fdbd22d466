"""Metrics for generated videos: the shipped digit classifier, centroid motion, PSNR and video scores."""

import pytest
import torch
from torch.utils.data import default_collate

from minimagic.checkpoint import WEIGHTS, load_meta
from minimagic.data import DIRECTION_NAMES, DIRECTIONS, NUMBER_WORDS, MovingDigits
from minimagic.metrics import (
    CLASSIFIER_DIR,
    NO_DIGIT,
    DigitClassifier,
    DigitClassifierConfig,
    centroid_path,
    motion_direction,
    psnr,
    video_scores,
)


@pytest.fixture(scope="module")
def classifier() -> DigitClassifier:
    return DigitClassifier.from_pretrained()


@pytest.fixture(scope="module")
def held_out_clips() -> dict:
    data = MovingDigits("test", length=200)
    return default_collate([data[i] for i in range(len(data))])  # video (200, 8, 1, 64, 64)


def square_video(corners: list[tuple[int, int]], size: int = 5, H: int = 32, W: int = 48) -> torch.Tensor:
    """One white `size` x `size` square per frame at top-left corner (x, y) on black: (F, 1, H, W)."""
    video = -torch.ones(len(corners), 1, H, W)
    for f, (x, y) in enumerate(corners):
        video[f, 0, y : y + size, x : x + size] = 1
    return video


def test_shipped_classifier_reads_held_out_digits(classifier):
    frames = default_collate([MovingDigits("test", image_mode=True)[i] for i in range(500)])
    with torch.no_grad():
        predicted = classifier(frames["image"]).argmax(-1)
    assert (predicted == frames["digit"]).float().mean() >= 0.98
    assert (CLASSIFIER_DIR / WEIGHTS).stat().st_size < 1_000_000
    meta = load_meta(CLASSIFIER_DIR, "digit-classifier")
    assert meta["test_accuracy"] >= 0.98 and meta["command"].startswith("python scripts/train_digit_classifier.py")
    assert classifier.features(frames["image"][:4]).shape == (4, classifier.config.channels[-1])


def test_classifier_on_noise_is_near_chance(classifier):
    """Noise clips captioned with random digits must score near chance, and no single digit may claim
    more than 30% of the noise frames (else a generator of noise would score on that digit's captions)."""
    generator = torch.Generator().manual_seed(0)
    noise = (0.5 * torch.randn(50, 8, 1, 64, 64, generator=generator)).clamp(-1, 1)  # (50, 8, 1, 64, 64)
    digits = torch.randint(10, (50,), generator=generator).tolist()
    captions = [f"the digit {NUMBER_WORDS[d]} moves left" for d in digits]
    scores = video_scores(noise, captions, classifier)
    assert scores["digit_accuracy"] < 0.3 and scores["identity_consistency"] < 0.3
    predicted = scores["predicted_digits"].flatten()  # (400,)
    assert torch.bincount(predicted, minlength=NO_DIGIT + 1)[:NO_DIGIT].max() / len(predicted) < 0.3
    with torch.no_grad():
        assert classifier(-torch.ones(1, 1, 64, 64)).argmax().item() == NO_DIGIT  # an empty canvas


def test_centroid_path_finds_a_square():
    video = square_video([(30, 10), (0, 0), (43, 27)])  # (3, 1, 32, 48)
    expected = torch.tensor([[32.0, 12.0], [2.0, 2.0], [45.0, 29.0]])
    torch.testing.assert_close(centroid_path(video), expected)
    batched = torch.stack([video, video.flip(0)]).unsqueeze(0)  # (1, 2, 3, 1, 32, 48)
    torch.testing.assert_close(centroid_path(batched)[0, 1], expected.flip(0))
    torch.testing.assert_close(centroid_path(-torch.ones(1, 1, 9, 5)), torch.tensor([[2.0, 4.0]]))  # black: centre
    with pytest.raises(ValueError, match="one channel"):
        centroid_path(torch.zeros(2, 3, 32, 32))


def test_motion_direction_of_moving_squares():
    for index, name in enumerate(DIRECTION_NAMES):
        dx, dy = DIRECTIONS[name]
        video = square_video([(20 + 3 * f * dx, 12 + 3 * f * dy) for f in range(4)])
        assert motion_direction(video).item() == index, name
    with pytest.raises(ValueError, match="2 frames"):
        motion_direction(square_video([(0, 0)]))


def test_motion_direction_matches_captions_of_real_clips(held_out_clips):
    assert torch.equal(motion_direction(held_out_clips["video"]), held_out_clips["direction"])


def test_video_scores_on_real_and_time_shuffled_clips(classifier, held_out_clips):
    videos, captions = held_out_clips["video"][:100], held_out_clips["caption"][:100]
    scores = video_scores(videos, captions, classifier)
    assert scores["digit_accuracy"] >= 0.95
    assert scores["direction_accuracy"] == 1.0
    assert scores["identity_consistency"] >= 0.9
    assert scores["predicted_digits"].shape == (100, 8) and scores["clip_digit_accuracy"].shape == (100,)
    generator = torch.Generator().manual_seed(0)
    order = torch.stack([torch.randperm(8, generator=generator) for _ in range(100)])  # (100, 8)
    shuffled = videos[torch.arange(100)[:, None], order]  # (100, 8, 1, 64, 64): same frames, new order
    shuffled_scores = video_scores(shuffled, captions, classifier)
    assert shuffled_scores["direction_accuracy"] < 0.8
    assert shuffled_scores["digit_accuracy"] == pytest.approx(scores["digit_accuracy"])


def test_video_scores_rejects_bad_input(classifier, held_out_clips):
    videos = held_out_clips["video"][:2]
    with pytest.raises(ValueError, match="captions"):
        video_scores(videos, ["the digit one moves up"], classifier)
    with pytest.raises(ValueError, match="single-digit"):
        video_scores(videos, ["the digit one moves up and the digit two moves left"] * 2, classifier)
    with pytest.raises(ValueError, match="B, F, 1, H, W"):
        video_scores(videos[:, 0], ["the digit one moves up"] * 2, classifier)


def test_psnr_is_infinite_for_identical_and_falls_with_noise():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, 1, 16, 16, generator=generator) * 2 - 1
    per_item, mean = psnr(x, x.clone())
    assert per_item.shape == (4,) and mean > 100
    means = [psnr(x, x + sigma * torch.randn(x.shape, generator=generator))[1] for sigma in (0.01, 0.1, 0.3)]
    assert means[0] > means[1] > means[2]
    assert psnr(torch.zeros(2, 3), torch.full((2, 3), 0.2))[1] == pytest.approx(20.0)  # 10 log10(4 / 0.04)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:2])


def test_classifier_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DigitClassifier(DigitClassifierConfig.preset("tiny")).eval()
    model.save_pretrained(tmp_path / "clf", test_accuracy=0.5)
    loaded = DigitClassifier.from_pretrained(tmp_path / "clf")
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="unknown DigitClassifier preset"):
        DigitClassifierConfig.preset("huge")
    with pytest.raises(ValueError, match="depths"):
        DigitClassifierConfig(channels=(8, 16), depths=(1,), norm_groups=4)
    with pytest.raises(ValueError, match="N, 1, H, W"):
        model(torch.zeros(3, 3, 64, 64))


def test_flicker_counts_frame_to_frame_changes_of_the_error_only():
    from minimagic.metrics import background_flicker, flicker

    truth = torch.rand(2, 5, 1, 8, 8) * 2 - 1
    steady_error = truth + 0.1  # the same error in every frame: no flicker
    assert flicker(steady_error, truth) == pytest.approx(0.0, abs=1e-6)
    dithered = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    assert flicker(dithered, truth) > 0.05
    black = torch.full((1, 4, 1, 8, 8), -1.0)
    assert background_flicker(black) == 0.0
    noisy = black + 0.05 * torch.rand(black.shape, generator=torch.Generator().manual_seed(1))
    assert 0.005 < background_flicker(noisy) < 0.05
    edge = black.clone()
    edge[..., :2] = 1.0  # ink in columns 0-1 of every frame
    edge[:, 1::2, ..., 2] = -0.6  # its anti-aliased rim, still background, changes by 0.4 in every other frame
    assert background_flicker(edge) == pytest.approx(0.4 / 6)  # 1 of 6 background columns changes
    assert background_flicker(edge, margin=1) == 0.0  # the rim lies within 1 px of ink: none of it is far
    assert background_flicker(noisy, margin=1) == background_flicker(noisy)  # no ink: all of it is far
    with pytest.raises(ValueError, match="margin >= 0"):
        background_flicker(black, margin=-1)
    with pytest.raises(ValueError, match="F >= 2"):
        flicker(truth[:, :1], truth[:, :1])
