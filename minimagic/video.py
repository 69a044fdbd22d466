"""Video I/O for MagicVideo's clips: write (F, C, H, W) videos in [-1, 1] as GIF/MP4, read and show them.

Reading (mp4, avi, gif) and MP4 writing (libx264, yuv420p) go through PyAV, which bundles FFmpeg; GIFs are
written with Pillow. Frames on disk are uint8; `to_uint8` / `from_uint8` convert to and from [-1, 1].
"""

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn.functional import pad

if TYPE_CHECKING:
    from IPython.display import Image as IPythonImage

WRITE_FORMATS = (".gif", ".mp4")
RANGE_SLACK = 0.5  # samples may overshoot [-1, 1] a little; beyond this the input is likely [0, 255]
MAX_FPS = 1000.0  # frame rates above this are a typo (GIF players cap far lower)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Map a float video in [-1, 1] to uint8 in [0, 255] (values outside are clamped)."""
    return ((video.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(video: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_uint8`: uint8 in [0, 255] -> float32 in [-1, 1]."""
    return video.float() / 127.5 - 1


def _check_video(video: torch.Tensor, ndim: int = 4, fps: float = 1) -> None:
    if not 0 < fps <= MAX_FPS:  # NaN fails too
        raise ValueError(f"fps must be in (0, {MAX_FPS}], got {fps}")
    layout = "(F, C, H, W)" if ndim == 4 else "(B, F, C, H, W)"
    if not isinstance(video, torch.Tensor) or video.ndim != ndim or video.numel() == 0:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a video tensor {layout}, got {got}")
    if video.shape[-3] not in (1, 3):
        raise ValueError(f"expected C = 1 or 3 channels in {layout}, got C = {video.shape[-3]}")
    if not torch.isfinite(video).all():  # min/max comparisons never catch NaN
        raise ValueError(f"the video holds {(~torch.isfinite(video)).sum().item()} NaN or inf values (a broken model?)")
    low, high = video.min().item(), video.max().item()
    if low < -1 - RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise ValueError(f"expected values in [-1, 1], got [{low:.3g}, {high:.3g}] (pass video / 127.5 - 1?)")


def _to_frames(video: torch.Tensor) -> np.ndarray:
    """(F, C, H, W) in [-1, 1] -> (F, H, W, 3) uint8 numpy; grayscale is repeated to RGB."""
    frames = to_uint8(video).expand(-1, 3, -1, -1)  # (F, 3, H, W)
    return frames.permute(0, 2, 3, 1).contiguous().numpy()  # (F, H, W, 3)


def _gif_bytes(video: torch.Tensor, fps: float) -> bytes:
    return iio.imwrite(
        "<bytes>", _to_frames(video), extension=".gif", plugin="pillow", duration=1000 / fps, loop=0
    )


def _write_mp4(video: torch.Tensor, path: Path, fps: float) -> None:
    _, _, H, W = video.shape
    # yuv420p stores chroma at half resolution, so libx264 needs even sides: replicate the last row/column
    video = pad(video, (0, W % 2, 0, H % 2), mode="replicate")  # (F, C, H + H%2, W + W%2)
    frames = _to_frames(video)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}  # near-lossless; the libx264 default (23) smears small toy videos
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder


def save_video(video: torch.Tensor, path: str | Path, fps: float = 8) -> Path:
    """Write a video (F, C, H, W) in [-1, 1] (C = 1 or 3) to `.gif` or `.mp4`; returns the path.

    Grayscale is written as RGB. MP4 pads odd heights/widths by one replicated row/column.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_FORMATS:
        raise ValueError(
            f"unknown video extension {path.suffix!r} for {path}; expected one of {WRITE_FORMATS}"
        )
    _check_video(video, fps=fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        path.write_bytes(_gif_bytes(video, fps))
    else:
        _write_mp4(video, path, fps)
    return path


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {path}: it has no video stream")
    return container


def video_info(path: str | Path) -> tuple[int, float]:
    """(number of frames, fps) of a video file, from the container header when it has them."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        try:  # some containers leave the frame count empty: count the packets instead
            num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        except av.FFmpegError as error:
            raise ValueError(f"cannot read video {path}: {error}") from error
        return num_frames, float(stream.average_rate or stream.guessed_rate or 0)


def read_video(
    path: str | Path, start: int = 0, num_frames: int | None = None, frame_stride: int = 1
) -> tuple[torch.Tensor, float]:
    """Read frames `start, start + frame_stride, ...` (`num_frames` of them, default all) of an mp4/avi/gif.

    Returns `(frames, fps)`: frames is (F, 3, H, W) uint8, fps the source frame rate. Decoding is
    sequential and stops at the last requested frame. Missing file -> FileNotFoundError, unreadable or
    too short -> ValueError naming the file.
    """
    path = Path(path)
    if start < 0 or frame_stride < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(
            f"need start >= 0, frame_stride >= 1, num_frames >= 1, got {start=} {frame_stride=} {num_frames=}"
        )
    last = None if num_frames is None else start + (num_frames - 1) * frame_stride
    frames = []
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if last is not None and index > last:
                    break
                if index >= start and (index - start) % frame_stride == 0:  # convert only kept frames
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as error:
            raise ValueError(f"cannot decode video {path}: {error}") from error
    if len(frames) < (num_frames or 1):
        raise ValueError(
            f"video {path} gave {len(frames)} frames from frame {start} on, expected {num_frames or 1}"
        )
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), fps  # (F, 3, H, W)


def frame_grid(
    videos: torch.Tensor, captions: list[str] | None = None, max_frames: int | None = None
) -> plt.Figure:
    """A figure with one row per video (B, F, C, H, W) in [-1, 1] and one column per frame.

    `max_frames` keeps that many evenly spaced frames; captions (one per video) become row titles.
    """
    _check_video(videos, ndim=5)
    B, num_frames = videos.shape[:2]
    if captions is not None and len(captions) != B:
        raise ValueError(f"expected {B} captions (one per video), got {len(captions)}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    columns = min(num_frames, max_frames or num_frames)
    keep = torch.linspace(0, num_frames - 1, columns).round().long()
    frames = to_uint8(videos[:, keep]).permute(0, 1, 3, 4, 2)  # (B, columns, H, W, C)
    fig, axes = plt.subplots(B, columns, figsize=(1.3 * columns, 1.4 * B), squeeze=False)
    for b in range(B):
        for col in range(columns):
            ax = axes[b, col]
            ax.imshow(frames[b, col].squeeze(-1), cmap="gray", vmin=0, vmax=255)
            ax.set(xticks=[], yticks=[])
            if b == 0:
                ax.set_title(f"frame {keep[col].item()}", fontsize=8)
        if captions is not None:
            axes[b, 0].set_ylabel(captions[b], rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def show_video(video: torch.Tensor, fps: float = 8) -> "IPythonImage":
    """An animated GIF of a video (F, C, H, W) in [-1, 1] for inline notebook display (end a cell with it)."""
    from IPython.display import Image as IPythonImage  # imported here: IPython is only needed in notebooks

    _check_video(video, fps=fps)
    return IPythonImage(data=_gif_bytes(video, fps), format="gif")
