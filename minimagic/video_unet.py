"""MagicVideo's keyframe denoiser eps_theta(z_t, t, tau(y), v) (§3): the 2D T2I U-Net inflated to video.

Inflation [docs/paper.md §4]: the 2D layers are reused and see the F frames folded into the batch (B*F, C, h, w);
every nn.Conv2d gets a FrameAdaptor (z_i = S_i * conv(z_i) + B_i); every SpatialTransformer becomes
z = S-Attn(z) + T-Attn(z) with a directed temporal attention branch; and the frame rate v is embedded as
Linear(SiLU(Linear(Sin(v)))) and added to the timestep embedding (§6.3). All new parts start as the identity
(S = 1, B = 0, zero T-Attn and FPS outputs), so at init the model is the image model run frame by frame.
"""

import copy
from dataclasses import asdict, dataclass, field, fields

import torch
from einops import repeat
from torch import nn

from minimagic.adaptor import AdaptedConv2d, FrameAdaptor, FrameContext, add_frame_adaptors
from minimagic.embedding import sinusoidal_embedding
from minimagic.spatial_transformer import SpatialTransformer
from minimagic.temporal_attention import DirectedTemporalAttention, TemporalKVCache
from minimagic.unet import UNet2D, UNetConfig

TEMPORAL_ATTENTION = ("directed", "bidirectional", "none")  # "none": the adaptor-only ablation
TEMPORAL_PLACEMENT = ("parallel", "sequential")  # the paper's sum of branches, or T-Attn after S-Attn


@dataclass
class VideoUNetConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)  # the 2D U-Net being inflated
    num_frames: int = 8  # max frames F: rows of the adaptors and of the frame-position table (paper: 16)
    use_adaptor: bool = True
    temporal_attention: str = "directed"
    temporal_placement: str = "parallel"
    fps_conditioning: bool = True
    frame_pos_embed: bool = True  # sinusoidal frame index in T-Attn: our addition, the paper has none

    def __post_init__(self):
        if isinstance(self.unet, dict):  # from `to_dict()` / a checkpoint
            self.unet = UNetConfig(**self.unet)
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.temporal_attention not in TEMPORAL_ATTENTION:
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION}, got {self.temporal_attention!r}")
        if self.temporal_placement not in TEMPORAL_PLACEMENT:
            raise ValueError(f"temporal_placement must be one of {TEMPORAL_PLACEMENT}, got {self.temporal_placement!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "VideoUNetConfig":
        """`UNetConfig.preset(name)` inflated to 8 frames (16, as in the paper, for `base`)."""
        if unknown := set(overrides) - {f.name for f in fields(cls)}:
            raise ValueError(f"unknown VideoUNetConfig fields {sorted(unknown)}")
        defaults = dict(unet=UNetConfig.preset(name), num_frames=16 if name == "base" else 8)
        return cls(**{**defaults, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


class SpatioTemporalBlock(nn.Module):
    """z = S-Attn(z) + T-Attn(z) (§3.1, "parallel"), or z' = S-Attn(z); z' + T-Attn(z') ("sequential").

    S-Attn is the reused SpatialTransformer, which already holds its residual (x + ...); T-Attn is a new,
    zero-initialised DirectedTemporalAttention branch, so at init the block equals the 2D block exactly.
    """

    def __init__(self, spatial: SpatialTransformer, frame_context: FrameContext, config: VideoUNetConfig):
        super().__init__()
        self.spatial, self.frame_context, self.placement = spatial, frame_context, config.temporal_placement
        directed = config.temporal_attention == "directed"
        self.temporal = DirectedTemporalAttention(
            spatial.norm.num_channels, config.unet.num_heads, config.num_frames, directed, config.frame_pos_embed
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (B*F, C, H, W) -> (B*F, C, H, W); the same signature as SpatialTransformer."""
        F = self.frame_context.num_frames
        y = self.spatial(x, context)  # (B*F, C, H, W)
        source = x if self.placement == "parallel" else y
        temporal = self.temporal(source.unflatten(0, (-1, F)), self.frame_context.cache)  # (B, F, C, H, W)
        z = y.unflatten(0, (-1, F)) + temporal  # (B, F, C, H, W)
        return z.flatten(0, 1)  # (B*F, C, H, W)


class VideoUNet(nn.Module):
    """Video denoiser: forward(x (B, F, c, h, w), t (B,) or (B, F), context (B, L, D), fps (B,)) -> eps."""

    def __init__(self, config: VideoUNetConfig, unet: UNet2D | None = None):
        """Inflate `unet` in place (it becomes ours), or a fresh UNet2D(config.unet): the from-scratch run."""
        super().__init__()
        unet = UNet2D(config.unet) if unet is None else unet
        if unet.config != config.unet:
            raise ValueError(f"unet.config {unet.config} differs from config.unet {config.unet}")
        if any(isinstance(m, (AdaptedConv2d, SpatioTemporalBlock)) for m in unet.modules()):
            raise ValueError("this UNet2D is already inflated; pass a plain image U-Net")
        self.config, self.unet, self.frame_context = config, unet, FrameContext()
        self.unet_config, self.num_frames = config.unet, config.num_frames  # what a checkpoint needs
        if config.use_adaptor:
            add_frame_adaptors(self.unet, config.num_frames, self.frame_context)
        if config.temporal_attention != "none":
            for parent in list(self.unet.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, SpatialTransformer):
                        setattr(parent, name, SpatioTemporalBlock(child, self.frame_context, config))
        self.fps_embed = None
        if config.fps_conditioning:  # emb_v = Linear(SiLU(Linear(Sin(v)))), last layer zero-initialised
            C, E = config.unet.channels[0], config.unet.time_embed_dim
            self.fps_embed = nn.Sequential(nn.Linear(C, E), nn.SiLU(), nn.Linear(E, E))
            nn.init.zeros_(self.fps_embed[2].weight)
            nn.init.zeros_(self.fps_embed[2].bias)

    @classmethod
    def from_unet2d(cls, unet2d: UNet2D, num_frames: int, **options) -> "VideoUNet":
        """Inflate a (pre-trained) image U-Net. It is deep-copied: `unet2d` stays a usable image model."""
        unet = copy.deepcopy(unet2d)
        return cls(VideoUNetConfig(unet=unet.config, num_frames=num_frames, **options), unet=unet)

    @classmethod
    def from_config_dict(cls, config: dict) -> "VideoUNet":
        return cls(VideoUNetConfig(**config))

    def config_dict(self) -> dict:
        return self.config.to_dict()

    def with_temporal_attention(self, kind: str) -> "VideoUNet":
        """The same parameters under another temporal mask (e.g. the bidirectional ablation of a directed model)."""
        model = VideoUNet.from_config_dict({**self.config_dict(), "temporal_attention": kind})
        model.load_state_dict(self.state_dict())
        return model.train(self.training)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        fps: torch.Tensor | float | None = None,
        cache: TemporalKVCache | None = None,
        extend_cache: bool = False,
    ) -> torch.Tensor:
        """x (B, F, c, h, w), t (B,) or per frame (B, F), context (B, L, D) -> eps, x's shape.

        fps (a number or (B,)) is the frame rate v of the clip, required iff config.fps_conditioning.
        cache: a TemporalKVCache holding the P finished frames before x (directed attention only): x is then
        frames P .. P+F-1 of the clip; extend_cache=True appends x's keys and values to it (streaming.py)."""
        first = cache.num_frames if cache is not None else 0
        if x.ndim != 5 or not 1 <= x.shape[1] <= self.num_frames - first:
            raise ValueError(f"x must be (B, F, c, h, w) with 1 <= F <= {self.num_frames - first} (model: "
                             f"{self.num_frames} frames, {first} cached), got {tuple(x.shape)}")
        B, F = x.shape[:2]
        if t.shape not in ((B,), (B, F)) or context.ndim != 3 or context.shape[0] != B:
            raise ValueError(f"t must be ({B},) or ({B}, {F}) and context ({B}, L, D), "
                             f"got {tuple(t.shape)} and {tuple(context.shape)}")
        if (fps is None) == self.config.fps_conditioning:
            raise ValueError(f"fps must be given iff fps_conditioning={self.config.fps_conditioning}, got {fps!r}")
        emb = self.unet.embed_time(t.reshape(-1))  # (B, E) or, for a per-frame t, (B*F, E)
        emb = repeat(emb, "b e -> (b f) e", f=F) if t.ndim == 1 else emb  # (B*F, E)
        if self.fps_embed is not None:
            v = torch.as_tensor(fps, dtype=torch.float32, device=x.device)  # frame rate v of each clip
            if v.ndim > 1 or v.numel() not in (1, B):
                raise ValueError(f"fps must be a number or a ({B},) tensor, got shape {tuple(v.shape)}")
            features = sinusoidal_embedding(v.reshape(-1).expand(B), self.unet_config.channels[0])  # Sin(v)
            emb_v = self.fps_embed(features.to(emb.dtype))  # (B, E)
            emb = emb + repeat(emb_v, "b e -> (b f) e", f=F)  # emb_v, added to the timestep embedding
        context = repeat(context, "b l d -> (b f) l d", f=F)  # every frame sees the same text
        if cache is not None:
            cache.extend = extend_cache
        # read by every AdaptedConv2d and SpatioTemporalBlock
        self.frame_context.num_frames, self.frame_context.first_frame, self.frame_context.cache = F, first, cache
        try:
            eps = self.unet.forward_features(x.flatten(0, 1), emb, context)  # (B*F, c, h, w)
        finally:
            self.frame_context.first_frame, self.frame_context.cache = 0, None
        if cache is not None and extend_cache:
            cache.num_frames += F
        return eps.unflatten(0, (B, F))  # (B, F, c, h, w)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by origin: `reused` (the 2D U-Net) and the new `adaptor`, `temporal` and `fps` ones."""
        groups = {"adaptor": [], "temporal": [], "fps": []}
        for module in self.modules():
            if isinstance(module, FrameAdaptor):
                groups["adaptor"] += list(module.parameters())
            elif isinstance(module, DirectedTemporalAttention):
                groups["temporal"] += list(module.parameters())
        groups["fps"] = list(self.fps_embed.parameters()) if self.fps_embed is not None else []
        new = {id(p) for group in groups.values() for p in group}
        return {"reused": [p for p in self.parameters() if id(p) not in new], **groups}

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters per group, plus `new` (adaptor + temporal + fps) and `total`."""
        counts = {name: sum(p.numel() for p in group) for name, group in self.parameter_groups().items()}
        counts["new"] = counts["adaptor"] + counts["temporal"] + counts["fps"]
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    def freeze_2d(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the reused 2D weights; adaptors, temporal attention and FPS stay trainable."""
        for p in self.parameter_groups()["reused"]:
            p.requires_grad_(not frozen)
