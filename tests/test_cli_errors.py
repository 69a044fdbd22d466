"""Every entry point fails on bad input with one clear line (exit code 2), never a traceback."""

import pytest

from minimagic.__main__ import main
from minimagic.data import DATA_DIR

T2V = str(DATA_DIR / "checkpoints" / "t2v-moving-digits")
VAE = str(DATA_DIR / "checkpoints" / "vae-moving-digits")


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "the digit one moves up", "--num-frames", "0"], "num_frames must be >= 1"),
    (["generate", "--prompt", "the digit one moves up", "--guidance", "-1"], "guidance_scale must be in [0, 50]"),
    (["generate", "--prompt", "the digit one moves up", "--steps", "0"], "num_steps"),
    (["generate", "--prompt", "the digit one moves up", "--checkpoint", VAE], "holds a 'vae' checkpoint"),
    (["generate", "--prompt", "x", "--out", "clip.avi"], "--out clip.avi: the video must be one of .gif, .mp4"),
    (["evaluate", "--checkpoint", "no/such/folder"], "checkpoint folder not found"),
    (["train", "t2i", "--preset", "huge", "--steps", "1"], "unknown UNet preset 'huge'"),
    (["train", "t2v", "--init", VAE, "--steps", "1"], "holds a 'vae' checkpoint"),
    (["train", "videovae", "--init", T2V, "--steps", "1"], "holds a 't2v' checkpoint"),
    (["train", "vae", "--steps", "0"], "steps, batch_size, grad_accum must be >= 1"),
    (["train", "vae", "--resume", "no/such/run"], "no/such/run"),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("error:") and "\n" not in err and message in err, err


@pytest.mark.parametrize("stage", ["t2i", "t2v"])
def test_an_unknown_preset_fails_before_the_clips_are_encoded(stage, monkeypatch, capsys):
    import minimagic.clips

    def no_encoding(*args, **kwargs):
        raise AssertionError("the clips were encoded before the preset was checked")

    monkeypatch.setattr(minimagic.clips, "encode_clips", no_encoding)
    with pytest.raises(SystemExit):
        main(["train", stage, "--preset", "huge", "--steps", "1"])
    assert "unknown UNet preset 'huge'" in capsys.readouterr().err


def test_the_commands_recorded_in_the_shipped_checkpoints_still_parse():
    import json
    import shlex
    from dataclasses import fields

    from minimagic.__main__ import parser
    from minimagic.stages import get_stage
    from minimagic.train import TrainConfig

    commands = [json.loads(path.read_text())["command"] for path in (DATA_DIR / "checkpoints").glob("*/config.json")]
    commands = [c for c in commands if c.startswith("python -m minimagic train")]
    assert len(commands) == 6
    for command in commands:
        args, unknown = parser().parse_known_args(shlex.split(command)[3:])
        assert unknown == [], command
        Stage = get_stage(args.stage)
        Stage.Options(**{f.name: getattr(args, f.name) for f in fields(Stage.Options) if getattr(args, f.name)})
        TrainConfig(**{**Stage.defaults, **{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                                            if getattr(args, f.name) is not None}})
