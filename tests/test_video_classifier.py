"""The FVD-MD video network (minimagic/video_classifier.py): shapes, round trip, and the shipped network's
accuracy and Fréchet distances on real, shuffled and noise clips."""

import pytest
import torch

from minimagic.data import MovingDigits, caption_for
from minimagic.fvd import fvd_md
from minimagic.stages import evaluate
from minimagic.video_classifier import VideoClassifier, VideoClassifierConfig, prompt_accuracy, video_features


def clips(seed: int, n: int = 200) -> tuple[torch.Tensor, list[str]]:
    data = MovingDigits("test", length=n, seed=seed)  # held-out digits, never seen in training
    items = [data[i] for i in range(n)]
    return torch.stack([item["video"] for item in items]), [item["caption"] for item in items]


@pytest.fixture(scope="module")
def network():
    return VideoClassifier.from_pretrained()


def test_shapes_any_number_of_frames_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VideoClassifier(VideoClassifierConfig.preset("tiny")).eval()
    video = torch.rand(3, 5, 1, 64, 64) * 2 - 1  # (B, F, 1, H, W)
    digit_logits, direction_logits = model(video)
    assert digit_logits.shape == (3, 10) and direction_logits.shape == (3, 8)
    assert model.features(video).shape == (3, model.feature_dim) == (3, 16)
    assert model.features(video[:, :2]).shape == (3, 16)
    model.save_pretrained(tmp_path / "net")
    loaded = VideoClassifier.from_pretrained(tmp_path / "net")
    assert torch.equal(loaded.features(video), model.features(video))
    with pytest.raises(ValueError, match=r"\(B, F, 1, H, W\)"):
        model(torch.zeros(3, 1, 64, 64))
    with pytest.raises(ValueError, match="norm_groups"):
        VideoClassifierConfig(channels=(6,), norm_groups=4)
    with pytest.raises(ValueError, match="holds a 'video-classifier' checkpoint"):
        evaluate(tmp_path / "net")  # evaluate refuses a folder of another stage


def test_shipped_network_reads_held_out_clips_and_not_noise(network):
    videos, captions = clips(seed=5)
    accuracy = prompt_accuracy(videos, captions, network)
    assert accuracy["digit_accuracy"] >= 0.95 and accuracy["direction_accuracy"] >= 0.95, accuracy
    noise = torch.rand(videos.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.randint(80, (len(videos),), generator=torch.Generator().manual_seed(1))
    random_captions = [caption_for([k // 8], [k % 8]) for k in labels.tolist()]
    chance = prompt_accuracy(noise, random_captions, network)
    assert chance["digit_accuracy"] <= 0.25 and chance["direction_accuracy"] <= 0.3, chance  # chance: 0.1, 0.125
    with pytest.raises(ValueError, match="captions for"):
        prompt_accuracy(videos, captions[:-1], network)


def test_fvd_md_of_real_clips_is_far_below_shuffled_frames_and_noise(network):
    real, _ = clips(seed=1, n=400)  # FVD-MD's own sampling error shrinks with the number of clips
    other, _ = clips(seed=2, n=400)
    order = torch.randperm(other.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = other[:, order]  # same digits and frames, motion scrambled
    noise = torch.rand(other.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same = fvd_md(real, other, network)
    assert fvd_md(real, real, network) == pytest.approx(0.0, abs=1e-6)
    assert same < 0.25 * fvd_md(real, shuffled, network)  # measured: 1.5 vs 9.7
    assert same < 0.05 * fvd_md(real, noise, network)  # measured: 1.5 vs 99
    assert fvd_md(real, other.flip(1), network) < 0.5 * fvd_md(real, shuffled, network)  # reversed: real motion
    assert video_features(real[:3], network).shape == (3, network.feature_dim)
