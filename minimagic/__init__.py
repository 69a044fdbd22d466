"""minimagic: a minimal, readable MagicVideo (Zhou et al., 2022, arXiv 2211.11018)."""

__version__ = "0.1.0"
