"""Where minimagic keeps its shipped files, and the defaults every stage agrees on (one place for both)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CACHE_DIR = DATA_DIR / "cache"  # latents of the training clips, keyed by the VAE's weights
CHECKPOINTS = DATA_DIR / "checkpoints"
VAE_CHECKPOINT = CHECKPOINTS / "vae-moving-digits"
T2I_CHECKPOINT = CHECKPOINTS / "t2i-moving-digits"
T2V_CHECKPOINT = CHECKPOINTS / "t2v-moving-digits"
VIDEOVAE_CHECKPOINT = CHECKPOINTS / "videovae-moving-digits"
INTERP_CHECKPOINT = CHECKPOINTS / "interp-moving-digits"
SUPERRES_CHECKPOINT = CHECKPOINTS / "superres-moving-digits"
CLASSIFIER_CHECKPOINT = CHECKPOINTS / "digit-classifier"
VIDEO_CLASSIFIER_CHECKPOINT = CHECKPOINTS / "video-classifier"

DEFAULT_FPS = 8.0  # frame rate v of the Moving-digit clips (docs/paper.md §6.3): one rendered frame per frame
