"""Fréchet distances (minimagic/fvd.py): closed-form cases, FID on digit features, the FVD protocol."""

import pytest
import torch
from torch import nn

from minimagic.data import MovingDigits
from minimagic.fvd import frame_fid, frechet_distance, fvd, i3d_input, load_i3d
from minimagic.metrics import DigitClassifier


def test_identical_sets_are_at_zero_and_distance_grows_with_a_shift():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shifts = [frechet_distance(x, x + s) for s in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # |mu_1 - mu_2|^2 exactly


def test_matches_the_closed_form_for_diagonal_gaussians():
    """For N(mu_1, diag(s_1^2)) and N(mu_2, diag(s_2^2)): d^2 = |mu_1 - mu_2|^2 + sum (s_1 - s_2)^2."""
    g = torch.Generator().manual_seed(1)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 1.0, 0.0])
    s_a, s_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([2.0, 1.0, 0.5])
    a = mu_a + s_a * torch.randn(200_000, 3, generator=g)
    b = mu_b + s_b * torch.randn(200_000, 3, generator=g)
    expected = ((mu_a - mu_b) ** 2).sum() + ((s_a - s_b) ** 2).sum()  # 1.25 + 2 = 3.25
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=0.02)


def test_full_covariances_use_the_matrix_square_root():
    """Two rotated copies of one anisotropic Gaussian have equal spectra: only tr(S1 + S2 - 2 sqrt(...)) > 0."""
    g = torch.Generator().manual_seed(2)
    base = torch.randn(100_000, 2, generator=g) * torch.tensor([3.0, 0.5])
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees: covariance diag(9, .25) -> diag(.25, 9)
    assert frechet_distance(base, base @ rotation.T) == pytest.approx(2 * (3.0 - 0.5) ** 2, rel=0.02)


def test_bad_feature_sets_are_refused():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(4, 3))


def test_frame_fid_separates_real_digits_from_noise():
    classifier = DigitClassifier.from_pretrained()
    real = MovingDigits("test", image_mode=True, length=256, seed=1)
    other = MovingDigits("test", image_mode=True, length=256, seed=2)
    a = torch.stack([real[i]["image"] for i in range(256)])  # (256, 1, H, W)
    b = torch.stack([other[i]["image"] for i in range(256)])
    noise = torch.rand(256, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert frame_fid(a, b, classifier) < 0.1 * frame_fid(a, noise, classifier)


class StandInI3D(nn.Module):
    """Takes what the real I3D takes, (B, 3, 16, 224, 224) and its keyword arguments, and returns (B, 400)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 400, kernel_size=(4, 16, 16), stride=(4, 16, 16))
        self.seen = []

    def forward(self, x, rescale, resize, return_features):
        self.seen.append((tuple(x.shape), rescale, resize, return_features, x.min().item(), x.max().item()))
        return self.conv(x).mean(dim=(2, 3, 4))  # (B, 400)


def test_fvd_protocol_with_a_stand_in_network():
    g = torch.Generator().manual_seed(3)
    real = torch.rand(6, 20, 1, 64, 64, generator=g) * 2 - 1  # (B, F, C, H, W), 20 frames: the first 16 count
    fake = real.flip(-1) * 0.5
    detector = StandInI3D()
    assert fvd(real, real, detector, batch_size=4) == pytest.approx(0.0, abs=1e-6)
    assert fvd(real, fake, detector, batch_size=4) > 0
    shape, rescale, resize, features, low, high = detector.seen[0]
    assert shape == (4, 3, 16, 224, 224) and (rescale, resize, features) == (False, False, True)
    assert -1 <= low and high <= 1


def test_i3d_input_and_file_errors(tmp_path):
    assert i3d_input(torch.zeros(2, 16, 3, 32, 48)).shape == (2, 3, 16, 224, 224)
    with pytest.raises(ValueError, match="F >= 16"):
        i3d_input(torch.zeros(2, 8, 1, 64, 64))
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        load_i3d(tmp_path / "i3d_torchscript.pt")
