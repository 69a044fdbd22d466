"""Fréchet distances between feature sets: FID-style scores for frames and FVD for clips (paper §8).

The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017),

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}),

is FID when the features come from an image network and FVD (Unterthiner et al. 2018) when they come from
a video network. MagicVideo reports FVD on UCF-101 and MSR-VTT with I3D features. minimagic offers:

* `frame_fid`: frames embedded by the Moving-MNIST digit classifier (`metrics.DigitClassifier.features`);
* `fvd_md`: clips embedded by the Moving-MNIST video network (`video_classifier.VideoClassifier.features`),
  trained to tell digit and direction: FVD's protocol with a feature network that knows this data;
* `fvd`: the standard protocol for real video, with an I3D network the user supplies as a file (it
  cannot be downloaded here): the TorchScript Kinetics-400 I3D used by StyleGAN-V and later video papers
  (`i3d_torchscript.pt`), fed 16 RGB frames resized to 224x224 with values in [-1, 1] as (B, 3, 16, 224,
  224), called with rescale=False, resize=False, return_features=True, giving (B, 400) features.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from minimagic.video_classifier import video_features

FVD_FRAMES = 16  # frames per clip in the standard FVD protocol
FVD_SIZE = 224  # frame size I3D expects
I3D_KWARGS = dict(rescale=False, resize=False, return_features=True)  # inputs already in [-1, 1], 224x224


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """d^2 between Gaussians fitted to features a (N, D) and b (M, D), computed in float64."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature sets with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 samples to estimate a covariance")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)  # (D,)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T  # S_1^{1/2}
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a)  # eigenvalues of S_1^{1/2} S_2 S_1^{1/2}
    trace_root = middle.clamp(min=0).sqrt().sum()  # tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}
    d2 = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return max(d2.item(), 0.0)


@torch.no_grad()
def frame_fid(real: torch.Tensor, fake: torch.Tensor, classifier, batch_size: int = 256) -> float:
    """FID-style score of two sets of frames (N, 1, H, W) in [-1, 1], in digit-classifier feature space."""
    device = next(classifier.parameters()).device
    embed = [torch.cat([classifier.features(chunk.to(device)).cpu() for chunk in x.split(batch_size)])
             for x in (real, fake)]
    return frechet_distance(*embed)


def fvd_md(real: torch.Tensor, generated: torch.Tensor, network, batch_size: int = 64) -> float:
    """FVD-MD of two sets of clips (N, F, 1, H, W) in [-1, 1], in the video classifier's feature space."""
    return frechet_distance(video_features(real, network, batch_size), video_features(generated, network, batch_size))


def i3d_input(video: torch.Tensor) -> torch.Tensor:
    """Videos (B, F, C, H, W) in [-1, 1], F >= 16, C in {1, 3} -> I3D's input (B, 3, 16, 224, 224):
    the first 16 frames, grey repeated to RGB, each frame resized bilinearly to 224x224."""
    if video.ndim != 5 or video.shape[2] not in (1, 3) or video.shape[1] < FVD_FRAMES:
        raise ValueError(f"FVD needs videos (B, F >= {FVD_FRAMES}, 1 or 3, H, W), got {tuple(video.shape)}")
    frames = video[:, :FVD_FRAMES].flatten(0, 1).float()  # (B*16, C, H, W)
    frames = F.interpolate(frames, size=(FVD_SIZE, FVD_SIZE), mode="bilinear", align_corners=False)
    frames = frames.expand(-1, 3, -1, -1).clamp(-1, 1)  # (B*16, 3, 224, 224)
    return frames.unflatten(0, (video.shape[0], FVD_FRAMES)).transpose(1, 2)  # (B, 3, 16, 224, 224)


def load_i3d(path: str | Path) -> torch.jit.ScriptModule:
    """The user's TorchScript I3D file (e.g. i3d_torchscript.pt); no download is attempted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D network not found at {path}: FVD needs the TorchScript Kinetics-400 I3D "
                                "(i3d_torchscript.pt, as used by StyleGAN-V); download it yourself and pass its path")
    return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def i3d_features(videos: torch.Tensor, detector, batch_size: int = 8) -> torch.Tensor:
    """(B, F, C, H, W) clips -> (B, D) I3D features (D = 400 for the standard network)."""
    device = next(iter(detector.parameters()), torch.empty(0)).device
    features = [detector(i3d_input(chunk).to(device), **I3D_KWARGS).cpu() for chunk in videos.split(batch_size)]
    return torch.cat(features).flatten(1)


def fvd(real: torch.Tensor, fake: torch.Tensor, detector, batch_size: int = 8) -> float:
    """FVD between two sets of clips (B, F, C, H, W) in [-1, 1] with the user's I3D `detector`."""
    return frechet_distance(i3d_features(real, detector, batch_size), i3d_features(fake, detector, batch_size))
