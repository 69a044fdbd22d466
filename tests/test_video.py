"""Video I/O: GIF/MP4 round trips, frame windows, bad input, figures and notebook display."""

import matplotlib
import pytest
import torch
from torchvision.io import decode_gif, read_file

from minimagic.video import frame_grid, from_uint8, read_video, save_video, show_video, to_uint8, video_info

matplotlib.use("Agg")


def moving_square(num_frames: int = 8, H: int = 32, W: int = 48, channels: int = 3) -> torch.Tensor:
    """A soft-edged bright square sliding right over a smooth gradient: (F, C, H, W) in [-1, 1]."""
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    frames = []
    for f in range(num_frames):
        cx, cy = 8 + 3 * f, H / 2
        square = torch.sigmoid(4 - (xs - cx).abs()) * torch.sigmoid(4 - (ys - cy).abs())  # (H, W)
        background = torch.stack([xs / W, ys / H, 1 - xs / W])[:channels] * 0.6 - 0.3  # (C, H, W)
        frames.append(background + 0.7 * square)
    return torch.stack(frames).clamp(-1, 1)  # (F, C, H, W)


def mean_abs_error(frames: torch.Tensor, video: torch.Tensor) -> float:
    return (frames.float() - to_uint8(video).float()).abs().mean().item() / 255


def test_uint8_conversions_are_inverse():
    video = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]
    assert (from_uint8(to_uint8(video)) - video).abs().max() <= 1 / 255


def test_gif_round_trip(tmp_path):
    video = moving_square()
    path = save_video(video, tmp_path / "sub" / "clip.gif", fps=8)  # parent folder is created
    frames, fps = read_video(path)
    assert frames.shape == (8, 3, 32, 48) and frames.dtype == torch.uint8
    assert mean_abs_error(frames, video) < 4 / 255
    assert fps == pytest.approx(8, rel=0.05)  # GIF stores centiseconds: 125 ms -> 120 ms
    decoded = decode_gif(read_file(str(path)))  # torchvision reads Pillow's GIF the same way
    assert decoded.shape == frames.shape and mean_abs_error(decoded, video) < 4 / 255


def test_grayscale_gif_is_written_as_rgb(tmp_path):
    video = moving_square(channels=1)
    frames, _ = read_video(save_video(video, tmp_path / "gray.gif"))
    assert frames.shape == (8, 3, 32, 48)
    assert torch.equal(frames[:, 0], frames[:, 1]) and torch.equal(frames[:, 1], frames[:, 2])
    assert mean_abs_error(frames[:, :1], video) < 4 / 255


def test_mp4_round_trip(tmp_path):
    video = moving_square(num_frames=12)
    frames, fps = read_video(save_video(video, tmp_path / "clip.mp4", fps=8))
    assert frames.shape == (12, 3, 32, 48)
    assert fps == 8
    assert mean_abs_error(frames, video) < 6 / 255
    shifted = video.roll(1, dims=0)  # frame order matters: the clip shifted by one frame fits worse
    assert mean_abs_error(frames, shifted) > 2 * mean_abs_error(frames, video)
    assert video_info(tmp_path / "clip.mp4") == (12, 8.0)


def test_mp4_pads_odd_sizes(tmp_path):
    video = moving_square(H=33, W=47)
    frames, _ = read_video(save_video(video, tmp_path / "odd.mp4"))
    assert frames.shape == (8, 3, 34, 48)
    assert mean_abs_error(frames[..., :33, :47], video) < 6 / 255


def test_read_video_window(tmp_path):
    brightness = torch.linspace(-0.9, 0.9, 10)  # frame f is a flat gray of its own level
    video = brightness.view(10, 1, 1, 1).expand(10, 3, 16, 16)  # (F, C, H, W)
    path = save_video(video, tmp_path / "ramp.mp4")
    frames, _ = read_video(path, start=2, num_frames=3, frame_stride=3)
    levels = from_uint8(frames).mean(dim=(1, 2, 3))  # (3,)
    assert torch.allclose(levels, brightness[[2, 5, 8]], atol=0.03)
    with pytest.raises(ValueError, match="ramp.mp4.*expected 4"):
        read_video(path, start=2, num_frames=4, frame_stride=3)
    with pytest.raises(ValueError, match="frame_stride"):
        read_video(path, frame_stride=0)


@pytest.mark.parametrize(
    "video, name, message",
    [
        (moving_square(), "clip.avi", "extension"),
        (moving_square()[None], "clip.gif", r"\(F, C, H, W\)"),
        (moving_square()[:, :2].clone(), "clip.mp4", "C = 1 or 3"),
        ((moving_square() + 1) * 127.5, "clip.gif", r"\[-1, 1\]"),
    ],
)
def test_save_video_rejects_bad_input(tmp_path, video, name, message):
    with pytest.raises(ValueError, match=message):
        save_video(video, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_save_video_rejects_bad_fps(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        save_video(moving_square(), tmp_path / "clip.mp4", fps=0)


def test_read_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_video(tmp_path / "nothing.mp4")
    for name in ("x.mp4", "x.gif"):
        (tmp_path / name).write_bytes(torch.randint(0, 256, (2000,), dtype=torch.uint8).numpy().tobytes())
        with pytest.raises(ValueError, match=name):
            read_video(tmp_path / name)


def test_frame_grid_layout():
    videos = torch.stack([moving_square(), -moving_square()])  # (B, F, C, H, W)
    fig = frame_grid(videos, captions=["a square", "its negative"], max_frames=4)
    axes = fig.axes
    assert len(axes) == 2 * 4
    assert axes[0].get_title() == "frame 0" and axes[3].get_title() == "frame 7"
    assert axes[4].get_ylabel() == "its negative"
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="captions"):
        frame_grid(videos, captions=["only one"])
    with pytest.raises(ValueError, match=r"\(B, F, C, H, W\)"):
        frame_grid(moving_square())


def test_show_video_makes_an_animated_gif():
    pytest.importorskip("IPython")
    image = show_video(moving_square(), fps=4)
    assert image.data[:6] == b"GIF89a"
    frames = decode_gif(torch.frombuffer(bytearray(image.data), dtype=torch.uint8))
    assert frames.shape == (8, 3, 32, 48)
