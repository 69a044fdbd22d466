"""`python -m minimagic evaluate` on tiny checkpoints, and its errors."""

import json

import pytest
import torch

from minimagic.__main__ import main
from minimagic.pipeline import TextToVideoPipeline
from minimagic.stages import evaluate
from minimagic.text import TextEncoder
from minimagic.unet import UNet2D, UNetConfig
from minimagic.vae import VAE, VAEConfig
from minimagic.video_unet import VideoUNet


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    text, vae = TextEncoder(), VAE(VAEConfig.preset("tiny"))
    vae.save_pretrained(root / "vae")
    unet = UNet2D(UNetConfig.preset("tiny", context_dim=text.dim))
    TextToVideoPipeline(unet, vae, text).save_pretrained(root / "t2i")
    TextToVideoPipeline(VideoUNet.from_unet2d(unet, 4), vae, text).save_pretrained(root / "t2v")
    return root


def test_evaluate_each_stage_writes_json_and_markdown(checkpoints, tmp_path):
    vae = evaluate(checkpoints / "vae", out=tmp_path / "vae", num_images=8)
    assert vae["stage"] == "vae" and 0 < vae["psnr_db"] < 28  # an untrained VAE cannot reconstruct
    assert json.loads((tmp_path / "vae.json").read_text()) == vae
    assert "| psnr_db |" in (tmp_path / "vae.md").read_text()

    t2i = evaluate(checkpoints / "t2i", per_digit=1, steps=2, guidance_scales=(1.0, 2.0))
    assert set(t2i["accuracy"]) == {"1.0", "2.0"} and all(0 <= a <= 1 for a in t2i["accuracy"].values())

    t2v = evaluate(checkpoints / "t2v", num_videos=3, steps=2, guidance_scale=7.5, out=tmp_path / "t2v-guidance7.5")
    assert json.loads((tmp_path / "t2v-guidance7.5.json").read_text())["guidance_scale"] == 7.5  # not "t2v-guidance7"
    for key in ("digit_accuracy", "direction_accuracy", "identity_consistency", "seconds_per_clip", "fvd_md",
                "fvd_md_digit_accuracy", "fvd_md_direction_accuracy", "background_flicker"):
        assert key in t2v
    assert t2v["digit_accuracy"] < 0.5  # random weights draw no digits
    assert t2v["fvd_md"] > 10 and t2v["fvd_md_digit_accuracy"] < 0.7  # nor anything like a real clip


def test_evaluate_cli_and_its_errors(checkpoints, tmp_path, capsys):
    main(["evaluate", "--checkpoint", str(checkpoints / "t2v"), "--num-videos", "2", "--steps", "3",
          "--guidance", "7.5", "--out", str(tmp_path / "e")])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["videos"], printed["ddim_steps"], printed["guidance_scale"]) == (2, 3, 7.5)
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(tmp_path / "missing")])
    assert "checkpoint folder not found" in capsys.readouterr().err
    classifier = checkpoints.parent / "classifier"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"stage": "digit-classifier", "config": {}}))
    with pytest.raises(ValueError, match="holds a 'digit-classifier' checkpoint"):
        evaluate(classifier)
