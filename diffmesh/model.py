"""The DiffMesh network and its two diffusion baselines, in one file.

Data path (B clips of f frames, N diffusion steps, L latent tokens of width d, K bones, S shape values):

    keypoints (B, f, 17, 3) --SpatioTemporalAdapter--> tokens b (B, f, L, d)    [or features (B, f, D) --FeatureAdapter-->]
    b --ConditionGenerator (pad to N with zeros)--> conditions c (B, N, L, d)
    x_end (learned, L x d) --N reverse steps of TwoStreamDenoiser (diffusion.motion_reverse)--> x_1..x_N
    x_1..x_f (+ residual to b) --MeshHead--> rotations (B, f, K, 3, 3), shape (B, S), camera (B, f, 3)

Baseline 1 runs a Gaussian DDIM chain of N steps per frame (f x N steps); Baseline 2 runs one chain of N steps
on the concatenation of the f frames. The per-frame reference model ('perframe') runs the adapter on each frame
alone and the mesh head on its tokens: no temporal context, no chain. Size presets are in `PRESETS` at the bottom.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import diffusion
from .body.landmark_ik import LandmarkIK
from .errors import SettingsError
from .rotations import rot6d_to_rotmat, rotmat_to_rot6d

METHODS = ("diffmesh", "baseline1", "baseline2", "perframe")
INPUTS = ("keypoints", "features")
DENOISER_DESIGNS = ("cross", "two_self", "one_self")   # paper Table 7: (c), (b), (a)
# What each keypoint carries (docs/method.md, "Inputs"): "2d" (x, y, 1 where MediaPipe returned a pose),
# "2d+vis" (x, y, MediaPipe's visibility; every checkpoint before issue 14), "2d+3d" (x, y, visibility and
# MediaPipe's world landmark, root-relative metres: DiffMesh refines MediaPipe's own 3D, as the paper's
# "with refinement" setting refines HybrIK's).
KEYPOINT_CHANNELS = {"2d": 3, "2d+vis": 3, "2d+3d": 6}
# How a reverse step uses the network's output (docs/method.md, "The chain"): "paper" (Eq. 7: the network
# predicts the motion m_i and the step moves by sqrt(beta_i) m_i, so the schedule bounds each step) or
# "residual" (the form of every checkpoint before issue 14: the output was divided by sqrt(beta_i) before
# Eq. 7 multiplied it back, an unbounded residual step on which beta had no effect).
MOTION_FORMS = ("paper", "residual")
# Where the head's pose starts (docs/method.md, "Anchoring"): "none" (mean pose, or a `refine` model's given pose) or
# "mediapipe-3d" (the IK of the model's own 2d+3d world-landmark channels, `body.landmark_ik`, plus a residual).
ANCHORS = ("none", "mediapipe-3d")


@dataclass
class ModelConfig:
    method: str = "diffmesh"        # diffmesh | baseline1 | baseline2 | perframe (no temporal context)
    input: str = "keypoints"        # keypoints (B, f, 17, 3) | features (B, f, feature_dim)
    feature_dim: int = 2048         # D of precomputed per-frame features (ResNet-50: 2048)
    num_keypoints: int = 17         # Human3.6M-17 layout of the 2D input
    keypoint_inputs: str = "2d+vis"  # KEYPOINT_CHANNELS: what each keypoint carries
    num_frames: int = 16            # f, frames per clip (paper: 16)
    num_steps: int = 30             # N, diffusion steps (paper: 30 = 16 frames + 14)
    num_tokens: int = 17            # L, latent tokens per frame (released code: one per joint)
    token_dim: int = 128            # d, width of each latent token (released: 128)
    adapter_dim: int = 512          # DSTformer width (released: 512)
    adapter_depth: int = 5          # DSTformer depth (released: 5)
    adapter_heads: int = 8
    adapter_mlp_ratio: float = 2.0
    adapter_maxlen: int = 243       # longest clip the temporal position embedding covers
    adapter_rep_dim: int = 0        # > 0: DSTformer's pre_logits (Linear adapter_dim -> rep + Tanh) before to_tokens
    gen_dim: int = 256              # conditional-feature generation block width (released: 256)
    gen_depth: int = 2
    gen_heads: int = 8
    gen_mlp_ratio: float = 0.125
    denoiser_depth: int = 4         # two-stream blocks (released: 4)
    denoiser_heads: int = 4
    denoiser_mlp_ratio: float = 2.0
    denoiser_design: str = "cross"  # Table 7: cross (c) | two_self (b) | one_self (a); see TwoStreamBlock, ConcatBlock
    norm_eps: float = 1e-5          # eps of every LayerNorm (MotionBERT / released DiffMesh: 1e-6)
    refine: bool = False            # "with refinement" (Table 2): the head regresses a residual on per-frame initial
                                    # body parameters given with the input (HybrIK's); see MeshHead
    refine_dim: int = 512           # hidden width of the refinement head (released: 512)
    anchor: str = "none"            # ANCHORS: "mediapipe-3d" refines the IK of the 2d+3d input's world landmarks
    beta_start: float = 1e-4        # DiffMesh motion schedule (DiffPose's linear, released values)
    beta_end: float = 1e-3
    motion_form: str = "paper"      # MOTION_FORMS; checkpoints without the field are "residual"
    dropout: float = 0.0
    body: str = "anny"              # body model the head's pose/shape parameters belong to
    num_bones: int = 24             # K, set from the body model
    num_shape: int = 6              # S, set from the body model

    @property
    def keypoint_channels(self) -> int:
        return KEYPOINT_CHANNELS[self.keypoint_inputs]

    @property
    def refines(self) -> bool:
        """Whether the mesh head regresses a residual on an initial pose (given, or the model's own IK)."""
        return self.refine or self.anchor != "none"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(f"method must be one of {METHODS}, got '{self.method}'")
        if self.input not in INPUTS:
            raise SettingsError(f"input must be one of {INPUTS}, got '{self.input}'")
        if self.keypoint_inputs not in KEYPOINT_CHANNELS:
            raise SettingsError(f"keypoint_inputs must be one of {sorted(KEYPOINT_CHANNELS)}, got '{self.keypoint_inputs}'")
        if self.motion_form not in MOTION_FORMS:
            raise SettingsError(f"motion_form must be one of {MOTION_FORMS}, got '{self.motion_form}'")
        if self.anchor not in ANCHORS:
            raise SettingsError(f"anchor must be one of {ANCHORS}, got '{self.anchor}'")
        if self.anchor != "none" and (self.input, self.keypoint_inputs, self.body, self.refine) != (
                "keypoints", "2d+3d", "anny", False):
            raise SettingsError(f"anchor={self.anchor!r} puts MediaPipe's world landmarks on Anny: it needs "
                                "--keypoint-inputs 2d+3d, keypoint input, the Anny body and no HybrIK refinement")
        if self.denoiser_design not in DENOISER_DESIGNS:
            raise SettingsError(f"denoiser_design must be one of {DENOISER_DESIGNS}, got '{self.denoiser_design}'")
        if self.adapter_rep_dim < 0:
            raise SettingsError(f"adapter_rep_dim must be >= 0 (0 = no pre_logits), got {self.adapter_rep_dim}")
        if not self.norm_eps > 0:
            raise SettingsError(f"norm_eps must be > 0, got {self.norm_eps}")
        if self.num_frames < 1:
            raise SettingsError(f"num_frames (f) must be >= 1, got {self.num_frames}")
        if self.num_steps < self.num_frames:
            raise SettingsError(
                f"N (num_steps={self.num_steps}) must be at least f (num_frames={self.num_frames}): the reverse chain "
                f"emits one frame per step; use num_steps >= {self.num_frames} (paper: f=16, N=30)"
            )
        if self.num_frames > self.adapter_maxlen:
            raise SettingsError(f"num_frames={self.num_frames} exceeds adapter_maxlen={self.adapter_maxlen}")
        for name in ("adapter", "gen", "denoiser"):
            width = {"adapter": self.adapter_dim, "gen": self.gen_dim, "denoiser": self.token_dim}[name]
            heads = getattr(self, f"{name}_heads")
            if width % heads:
                raise SettingsError(f"{name} width {width} is not divisible by {name}_heads={heads}")


# ---------------------------------------------------------------- building blocks

class Attention(nn.Module):
    """Multi-head attention (fused scaled-dot-product); self-attention when `context` is None."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        B, L, C = x.shape
        context = x if context is None else context
        q = self.q(x).view(B, L, self.heads, C // self.heads).transpose(1, 2)               # (B, h, L, C/h)
        k, v = self.kv(context).view(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


def mlp(dim: int, ratio: float, dropout: float = 0.0) -> nn.Sequential:
    hidden = max(1, int(dim * ratio))
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN x), then x + MLP(LN x). Input and output (B, L, dim)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=eps), Attention(dim, heads, dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=eps), mlp(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sinusoidal_embedding(steps: Tensor, dim: int) -> Tensor:
    """DDPM's sinusoidal step embedding: (B,) integer steps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device, dtype=torch.float32) / max(half - 1, 1))
    args = steps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], 1)
    return F.pad(emb, (0, dim % 2))


# ---------------------------------------------------------------- input adapters

class SpatioTemporalAdapter(nn.Module):
    """DSTformer-style backbone for 2D keypoints: each layer runs a spatial->temporal and a temporal->spatial
    branch and fuses them with learned per-token weights. (B, f, J, C) -> (B, f, L=J, d), C = 3 or 6 channels
    (`KEYPOINT_CHANNELS`).

    With cfg.adapter_rep_dim = R > 0, `pre_logits` (Linear C -> R, Tanh; DSTformer's representation layer) maps
    the normed (B, f, J, C) features to (B, f, J, R) before `to_tokens` (Linear R -> d, ReLU)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, J = cfg.adapter_dim, cfg.num_keypoints
        self.joint_embed = nn.Linear(cfg.keypoint_channels, dim)
        self.spatial_pos = nn.Parameter(torch.randn(1, 1, J, dim) * 0.02)
        self.temporal_pos = nn.Parameter(torch.randn(1, cfg.adapter_maxlen, 1, dim) * 0.02)
        make = lambda: Block(dim, cfg.adapter_heads, cfg.adapter_mlp_ratio, cfg.dropout, cfg.norm_eps)  # noqa: E731
        self.st_spatial = nn.ModuleList(make() for _ in range(cfg.adapter_depth))
        self.st_temporal = nn.ModuleList(make() for _ in range(cfg.adapter_depth))
        self.ts_temporal = nn.ModuleList(make() for _ in range(cfg.adapter_depth))
        self.ts_spatial = nn.ModuleList(make() for _ in range(cfg.adapter_depth))
        self.fuse = nn.ModuleList(nn.Linear(2 * dim, 2) for _ in range(cfg.adapter_depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        rep = cfg.adapter_rep_dim or dim
        # (B, f, J, C) -> (B, f, J, R); None (no parameters) when adapter_rep_dim is 0
        self.pre_logits = nn.Sequential(nn.Linear(dim, rep), nn.Tanh()) if cfg.adapter_rep_dim else None
        self.to_tokens = nn.Sequential(nn.Linear(rep, cfg.token_dim), nn.ReLU())   # (B, f, J, R) -> (B, f, J, d)

    @staticmethod
    def _spatial(block: Block, x: Tensor) -> Tensor:
        B, f, J, C = x.shape
        return block(x.reshape(B * f, J, C)).view(B, f, J, C)                 # attend over joints

    @staticmethod
    def _temporal(block: Block, x: Tensor) -> Tensor:
        B, f, J, C = x.shape
        x = block(x.transpose(1, 2).reshape(B * J, f, C))                     # attend over frames
        return x.view(B, J, f, C).transpose(1, 2)

    def forward(self, keypoints: Tensor) -> Tensor:
        f = keypoints.shape[1]
        x = self.joint_embed(keypoints) + self.spatial_pos + self.temporal_pos[:, :f]   # (B, f, J, C)
        for s1, t1, t2, s2, fuse in zip(self.st_spatial, self.st_temporal, self.ts_temporal, self.ts_spatial, self.fuse):
            a = self._temporal(t1, self._spatial(s1, x))                         # spatial then temporal
            b = self._spatial(s2, self._temporal(t2, x))                         # temporal then spatial
            w = fuse(torch.cat([a, b], -1)).softmax(-1)                          # (B, f, J, 2)
            x = w[..., :1] * a + w[..., 1:] * b
        x = self.norm(x)                                                         # (B, f, J, C)
        if self.pre_logits is not None:
            x = self.pre_logits(x)                                               # (B, f, J, R)
        return self.to_tokens(x)                                                 # (B, f, J, d)


class FeatureAdapter(nn.Module):
    """Precomputed per-frame features (B, f, D) -> tokens (B, f, L, d)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.L, self.d = cfg.num_tokens, cfg.token_dim
        self.proj = nn.Sequential(nn.Linear(cfg.feature_dim, cfg.num_tokens * cfg.token_dim), nn.ReLU())

    def forward(self, features: Tensor) -> Tensor:
        B, f, _ = features.shape
        return self.proj(features).view(B, f, self.L, self.d)


# ---------------------------------------------------------------- conditional-feature generation block

class ConditionGenerator(nn.Module):
    """Pads the f frame features with N-f zero features and runs a small transformer with a residual:
    (B, f, L*d) -> conditions c_1..c_N (B, N, L*d). Frames come first, so c_i belongs to frame i."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        width = cfg.num_tokens * cfg.token_dim
        self.num_steps = cfg.num_steps
        self.inp = nn.Sequential(nn.Linear(width, cfg.gen_dim), nn.GELU())
        self.pos = nn.Parameter(torch.randn(1, cfg.num_steps, cfg.gen_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.gen_dim, cfg.gen_heads, cfg.gen_mlp_ratio, cfg.dropout, cfg.norm_eps)
                                    for _ in range(cfg.gen_depth))
        self.norm = nn.LayerNorm(cfg.gen_dim, eps=cfg.norm_eps)
        self.out = nn.Sequential(nn.Linear(cfg.gen_dim, width), nn.GELU())

    def forward(self, frames: Tensor) -> Tensor:
        B, f, W = frames.shape
        b = torch.cat([frames, frames.new_zeros(B, self.num_steps - f, W)], 1)  # (B, N, L*d)
        h = self.inp(b) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h)) + b


# ---------------------------------------------------------------- two-stream denoiser (Fig. 6, Fig. 9)

class TwoStreamBlock(nn.Module):
    """Mesh and condition streams each self-attend, then the condition stream is fused into the mesh stream;
    each stream has its MLP. x, c: (B, L, dim) -> (B, L, dim), (B, L, dim).

    cross=True (Table 7 (c), the default): the fusion is cross-attention, queries from the mesh stream and
    keys/values from the condition stream. cross=False (Table 7 (b), two self-attention streams): no attention
    between the streams; the condition is added token by token, x + fuse(LN c) (`fuse`: Linear dim -> dim).
    `condition_mlp=False` drops the condition stream's MLP where nothing reads it (the last block of a baseline
    denoiser)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, condition_mlp: bool = True,
                 eps: float = 1e-5, cross: bool = True):
        super().__init__()
        self.use_cross = cross
        self.norm_x, self.self_x = nn.LayerNorm(dim, eps=eps), Attention(dim, heads, dropout)
        self.norm_c, self.self_c = nn.LayerNorm(dim, eps=eps), Attention(dim, heads, dropout)
        if cross:
            self.norm_q, self.norm_kv = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
            self.cross = Attention(dim, heads, dropout)
        else:
            self.norm_f, self.fuse = nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim)
        self.norm_mx, self.mlp_x = nn.LayerNorm(dim, eps=eps), mlp(dim, mlp_ratio, dropout)
        self.mlp_c = nn.Sequential(nn.LayerNorm(dim, eps=eps), mlp(dim, mlp_ratio, dropout)) if condition_mlp else None

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        x = x + self.self_x(self.norm_x(x))                                      # mesh self-attention
        c = c + self.self_c(self.norm_c(c))                                      # condition self-attention
        if self.use_cross:
            x = x + self.cross(self.norm_q(x), self.norm_kv(c))                  # condition -> mesh (attention)
        else:
            x = x + self.fuse(self.norm_f(c))                                    # condition -> mesh (token-wise)
        x = x + self.mlp_x(self.norm_mx(x))
        if self.mlp_c is not None:
            c = c + self.mlp_c(c)
        return x, c


class ConcatBlock(Block):
    """Table 7 (a), one self-attention: a pre-norm `Block` over the 2L concatenated mesh and condition tokens.
    x, c: (B, L, dim) -> cat (B, 2L, dim) -> Block -> split back into (B, L, dim), (B, L, dim)."""

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        L = x.shape[1]
        h = super().forward(torch.cat([x, c], 1))                                # (B, 2L, dim)
        return h[:, :L], h[:, L:]


class TwoStreamDenoiser(nn.Module):
    """One reverse step: (x (B, L, io_dim), c (B, L, io_dim), step (B,)) -> motion/noise (B, L, io_dim) and,
    for DiffMesh, the previous condition (B, L, io_dim). io_dim is d, or f*d for Baseline 2, projected to d.
    The blocks follow cfg.denoiser_design: 'cross' and 'two_self' are `TwoStreamBlock`s (with and without
    cross-attention), 'one_self' are `ConcatBlock`s over the 2L concatenated tokens."""

    def __init__(self, cfg: ModelConfig, io_dim: int, predict_condition: bool):
        super().__init__()
        d = cfg.token_dim
        self.in_x = nn.Linear(io_dim, d) if io_dim != d else nn.Identity()
        self.in_c = nn.Linear(io_dim, d) if io_dim != d else nn.Identity()
        self.time = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        depth, eps = cfg.denoiser_depth, cfg.norm_eps
        if cfg.denoiser_design == "one_self":
            self.blocks = nn.ModuleList(
                ConcatBlock(d, cfg.denoiser_heads, cfg.denoiser_mlp_ratio, cfg.dropout, eps) for _ in range(depth))
        else:
            self.blocks = nn.ModuleList(
                TwoStreamBlock(d, cfg.denoiser_heads, cfg.denoiser_mlp_ratio, cfg.dropout,
                               condition_mlp=predict_condition or i < depth - 1, eps=eps,
                               cross=cfg.denoiser_design == "cross")
                for i in range(depth))
        self.out_x = nn.Sequential(nn.LayerNorm(d, eps=eps), nn.Linear(d, io_dim))
        self.out_c = nn.Sequential(nn.LayerNorm(d, eps=eps), nn.Linear(d, io_dim)) if predict_condition else None

    def forward(self, x: Tensor, c: Tensor, step: Tensor) -> tuple[Tensor, Tensor | None]:
        t = self.time(sinusoidal_embedding(step, self.time[0].in_features))[:, None]  # (B, 1, d)
        hx, hc = self.in_x(x) + t, self.in_c(c) + t                                     # (B, L, d)
        for block in self.blocks:
            hx, hc = block(hx, hc)
        return self.out_x(hx), (self.out_c(hc) if self.out_c is not None else None)


# ---------------------------------------------------------------- mesh head

class MeshHead(nn.Module):
    """Per-frame features (B, f, L*d) -> per-frame pose (6D per bone, from the body's mean pose), one shape per
    clip (from time-averaged features, from the mean shape) and a per-frame weak-perspective camera (s, tx, ty)
    that maps root-relative camera-frame joints to normalised image coordinates: uv = s * XY + (tx, ty).

    With cfg.refine the pose starts from a given per-frame initial pose (B, f, K, 6) instead of the mean: a residual
    from [Linear(features), Conv1d_k5(initial pose)] through a temporal Conv1d_k5, zero-initialised so the model
    starts exactly at the initial pose (the released refiner mixes two 6D layouts and starts elsewhere); the shape
    starts from the clip's mean initial shape (B, f, S)."""

    def __init__(self, cfg: ModelConfig, mean_pose: Tensor, mean_shape: Tensor):
        super().__init__()
        width, K, S = cfg.num_tokens * cfg.token_dim, cfg.num_bones, cfg.num_shape
        self.pose, self.shape, self.camera = nn.Linear(width, K * 6), nn.Linear(width, S), nn.Linear(width, 3)
        for layer in (self.pose, self.shape, self.camera):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        self.register_buffer("mean_pose6d", rotmat_to_rot6d(mean_pose).reshape(K * 6))
        self.register_buffer("mean_shape", mean_shape.reshape(S).clone())
        self.register_buffer("mean_camera", torch.tensor([1.0, 0.0, 0.0]))
        if cfg.refines:
            h = cfg.refine_dim
            self.refine_features = nn.Sequential(nn.Linear(width, h), nn.ReLU())
            self.refine_initial = nn.Sequential(nn.Conv1d(K * 6, h, 5, padding=2), nn.ReLU())
            self.refine_pose = nn.Conv1d(2 * h, K * 6, 5, padding=2)
            nn.init.zeros_(self.refine_pose.weight)
            nn.init.zeros_(self.refine_pose.bias)

    def forward(self, feats: Tensor, init_pose6d: Tensor | None = None, init_shape: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """feats (B, f, L*d); init_pose6d (B, f, K*6) and init_shape (B, f, S) for a refining head."""
        B, f, _ = feats.shape
        if init_pose6d is None:
            pose6d = (self.pose(feats) + self.mean_pose6d).view(B, f, -1, 6)     # (B, f, K, 6)
            shape = self.shape(feats.mean(1)) + self.mean_shape                   # (B, S)
        else:
            a = self.refine_features(feats)                                       # (B, f, h)
            b = self.refine_initial(init_pose6d.transpose(1, 2)).transpose(1, 2)  # (B, f, h)
            delta = self.refine_pose(torch.cat([a, b], -1).transpose(1, 2)).transpose(1, 2)
            pose6d = (init_pose6d + delta).view(B, f, -1, 6)
            shape = self.shape(feats.mean(1)) + init_shape.mean(1)
        camera = self.camera(feats) + self.mean_camera                            # (B, f, 3)
        return rot6d_to_rotmat(pose6d), pose6d, shape, camera


# ---------------------------------------------------------------- the whole model

@dataclass
class ModelOutput:
    """rotmats (B, f, K, 3, 3); pose6d (B, f, K, 6); shape (B, S); camera (B, f, 3) as (s, tx, ty);
    frame_features (B, f, L*d) after the chain; predicted_conditions / target_conditions (B, N-1, L*d) for the
    auxiliary loss (DiffMesh only, else None); denoiser_calls: steps run for the batch (N, N or f x N)."""

    rotmats: Tensor
    pose6d: Tensor
    shape: Tensor
    camera: Tensor
    frame_features: Tensor
    predicted_conditions: Tensor | None = None
    target_conditions: Tensor | None = None
    denoiser_calls: int = 0


class DiffMeshModel(nn.Module):
    def __init__(self, cfg: ModelConfig, mean_pose: Tensor, mean_shape: Tensor, skeleton=None):
        """`skeleton`: the body's `Skeleton` at the mean shape, which an anchored model's IK (cfg.anchor) poses."""
        super().__init__()
        cfg.validate()
        if mean_pose.shape != (cfg.num_bones, 3, 3) or mean_shape.shape != (cfg.num_shape,):
            raise ValueError(f"mean pose/shape {tuple(mean_pose.shape)}/{tuple(mean_shape.shape)} do not match "
                             f"num_bones={cfg.num_bones}, num_shape={cfg.num_shape}")
        self.cfg = cfg
        if cfg.anchor != "none":
            if skeleton is None:
                raise ValueError(f"anchor={cfg.anchor!r} needs the body's skeleton: build the model with build_model")
            self.anchor_ik = LandmarkIK(skeleton.names, skeleton.parents, skeleton.rest_heads)
        L, d, f = cfg.num_tokens, cfg.token_dim, cfg.num_frames
        if cfg.input == "keypoints" and cfg.num_tokens != cfg.num_keypoints:
            raise ValueError("with keypoint input the latent has one token per keypoint: set num_tokens = num_keypoints")
        self.adapter = SpatioTemporalAdapter(cfg) if cfg.input == "keypoints" else FeatureAdapter(cfg)
        if cfg.method != "perframe":
            self.generator = ConditionGenerator(cfg)
        if cfg.method == "diffmesh":
            self.x_end = nn.Parameter(torch.randn(L, d) * 0.02)                   # learned initial distribution
            self.denoiser = TwoStreamDenoiser(cfg, io_dim=d, predict_condition=True)
            self.register_buffer("betas", diffusion.linear_betas(cfg.num_steps, cfg.beta_start, cfg.beta_end).float())
        elif cfg.method != "perframe":
            io_dim = d if cfg.method == "baseline1" else f * d
            self.denoiser = TwoStreamDenoiser(cfg, io_dim=io_dim, predict_condition=False)
            self.register_buffer("betas", diffusion.gaussian_betas(cfg.num_steps).float())
        self.out = nn.Sequential(nn.Linear(L * d, L * d), nn.GELU())              # residual after the chain
        self.head = MeshHead(cfg, mean_pose, mean_shape)

    def check_input(self, x: Tensor) -> None:
        cfg = self.cfg
        if cfg.input == "keypoints":
            C = cfg.keypoint_channels
            want = f"(B, {cfg.num_frames}, {cfg.num_keypoints}, {C}) ({cfg.keypoint_inputs} keypoints)"
            ok = x.ndim == 4 and x.shape[1:] == (cfg.num_frames, cfg.num_keypoints, C)
        else:
            want = f"(B, {cfg.num_frames}, {cfg.feature_dim})"
            ok = x.ndim == 3 and x.shape[1:] == (cfg.num_frames, cfg.feature_dim)
        if not ok:
            raise ValueError(f"{cfg.input} input must have shape {want}, got {tuple(x.shape)}")

    def forward(self, x: Tensor, generator: torch.Generator | None = None, init_pose: Tensor | None = None,
                init_shape: Tensor | None = None) -> ModelOutput:
        """x: keypoints (B, f, 17, 3) or features (B, f, D). `generator` seeds the baselines' Gaussian start.
        A refining model (cfg.refine) also takes the initial pose (B, f, K, 3, 3) and shape (B, f, S) per frame."""
        self.check_input(x)
        cfg = self.cfg
        B, f, L, d = x.shape[0], cfg.num_frames, cfg.num_tokens, cfg.token_dim
        init = self._initial(x, init_pose, init_shape)
        pred_c = target_c = None
        if cfg.method == "perframe":                                               # every frame on its own
            b = self.adapter(x.reshape(B * f, 1, *x.shape[2:])).reshape(B * f, 1, L * d)
            init = tuple(t.reshape(B * f, 1, -1) for t in init)
            rotmats, pose6d, shape, camera = self.head(self.out(b) + b, *init)
            return ModelOutput(rotmats.view(B, f, *rotmats.shape[2:]), pose6d.view(B, f, *pose6d.shape[2:]),
                               shape.view(B, f, -1).mean(1), camera.view(B, f, 3), b.view(B, f, L * d), denoiser_calls=0)
        tokens = self.adapter(x)                                                  # (B, f, L, d)
        b = tokens.reshape(B, f, L * d)
        c = self.generator(b)                                                     # (B, N, L*d)
        if cfg.method == "diffmesh":
            x_end = self.x_end.expand(B, L, d)
            states, pred_c = diffusion.motion_reverse(
                x_end, c.view(B, -1, L, d), self.motion_step, self.betas)         # (B, N, L, d)
            chain = states[:, :f].reshape(B, f, L * d)
            pred_c = pred_c.reshape(B, -1, L * d)
            target_c = c[:, :-1].detach()                                          # c_1..c_{N-1}
            calls = cfg.num_steps
        elif cfg.method == "baseline1":
            # One Gaussian chain per frame (f x N denoiser evaluations). The f chains are independent, so they
            # run side by side as a batch of B*f: the same arithmetic as f chains in turn, fewer kernel launches.
            noise = torch.randn(B * f, L, d, generator=generator, device=x.device)
            chain = diffusion.gaussian_reverse(noise, c[:, :f].reshape(B * f, L, d), self.noise_step, self.betas)
            chain = chain.view(B, f, L * d)
            calls = f * cfg.num_steps
        else:
            cond = c[:, :f].view(B, f, L, d).permute(0, 2, 1, 3).reshape(B, L, f * d)   # frames concatenated
            noise = torch.randn(B, L, f * d, generator=generator, device=x.device)
            out = diffusion.gaussian_reverse(noise, cond, self.noise_step, self.betas)
            chain = out.view(B, L, f, d).permute(0, 2, 1, 3).reshape(B, f, L * d)  # split back into frames
            calls = cfg.num_steps
        feats = self.out(chain) + b                                                # (B, f, L*d)
        rotmats, pose6d, shape, camera = self.head(feats, *init)
        return ModelOutput(rotmats, pose6d, shape, camera, feats, pred_c, target_c, calls)

    def chain_from(self, x: Tensor, start: Tensor | None = None) -> tuple[ModelOutput, Tensor]:
        """DiffMesh's `forward` with a state handed to its reverse chain (the video pipeline's chained windows).

        start None: the chain starts at x_end and runs all N steps, the arithmetic of `forward`. start (B, L, d):
        the chain starts at x_{f+1} = start and runs only the last f steps (f..1, conditions c_f..c_1), skipping
        the N-f pad steps that carry x_end to x_{f+1}; x_{f+1} is the state one motion past frame f (Eq. 6), so
        `start` is the state of the frame after this window's last, taken from the chain of the window that
        follows. Returns the output (no auxiliary conditions) and the chain's frame states x_1..x_f (B, f, L, d)."""
        cfg = self.cfg
        if cfg.method != "diffmesh" or cfg.refine:
            raise ValueError(f"chain_from needs a DiffMesh model without HybrIK refinement, not method={cfg.method!r}"
                             + (" with refine" if cfg.refine else ""))
        self.check_input(x)
        init = self._initial(x, None, None)
        B, f, L, d = x.shape[0], cfg.num_frames, cfg.num_tokens, cfg.token_dim
        b = self.adapter(x).reshape(B, f, L * d)
        c = self.generator(b).view(B, -1, L, d)                                   # (B, N, L, d)
        if start is None:
            states, _ = diffusion.motion_reverse(self.x_end.expand(B, L, d), c, self.motion_step, self.betas)
        else:
            if tuple(start.shape) != (B, L, d):
                raise ValueError(f"start must have shape {(B, L, d)}, got {tuple(start.shape)}")
            states, _ = diffusion.motion_reverse(start, c[:, :f], self.motion_step, self.betas[:f])
        states = states[:, :f]                                                    # x_1..x_f
        feats = self.out(states.reshape(B, f, L * d)) + b
        rotmats, pose6d, shape, camera = self.head(feats, *init)
        calls = cfg.num_steps if start is None else f
        return ModelOutput(rotmats, pose6d, shape, camera, feats, denoiser_calls=calls), states

    def _initial(self, x: Tensor, init_pose: Tensor | None, init_shape: Tensor | None) -> tuple:
        """() for a plain model; (init pose 6D (B, f, K*6), init shape (B, f, S)) for a refining one: the given
        HybrIK parameters (cfg.refine) or the IK of the input's world landmarks (cfg.anchor)."""
        cfg = self.cfg
        B = x.shape[0]
        if not cfg.refine:
            if init_pose is not None:
                raise ValueError("this model does not take initial body parameters; do not pass init_pose")
            if cfg.anchor == "none":
                return ()
            # the IK of the world-joint channels, the mean pose where MediaPipe returned nothing; the mean shape
            pose6d = self.anchor_ik.initial_pose6d(x[..., 3:6], self.head.mean_pose6d).to(x.dtype)
            return pose6d, x.new_zeros(*x.shape[:2], cfg.num_shape)
        want = ((B, cfg.num_frames, cfg.num_bones, 3, 3), (B, cfg.num_frames, cfg.num_shape))
        if init_pose is None or init_shape is None or (tuple(init_pose.shape), tuple(init_shape.shape)) != want:
            got = None if init_pose is None else (tuple(init_pose.shape), tuple(getattr(init_shape, "shape", ())))
            raise ValueError(f"this model refines initial body parameters (HybrIK's): pass init_pose {want[0]} and "
                             f"init_shape {want[1]}, got {got}")
        return rotmat_to_rot6d(init_pose).flatten(2), init_shape

    def motion_step(self, x: Tensor, c: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        # "paper": the network's output is the motion m_i of Eq. 6/7 itself, and motion_reverse scales it by
        # sqrt(beta_i), so the schedule bounds every step. "residual" (old checkpoints): the output was divided by
        # sqrt(beta_i) here and multiplied back there, so beta cancelled and each step was an unbounded residual.
        motion, prev_c = self.denoiser(x, c, step)
        if self.cfg.motion_form == "residual":
            motion = motion / self.betas[step].sqrt().view(-1, 1, 1)
        return motion, prev_c

    def noise_step(self, x: Tensor, c: Tensor, step: Tensor) -> Tensor:
        return self.denoiser(x, c, step)[0]


# ---------------------------------------------------------------- presets

PRESETS: dict[str, dict] = {
    # CPU-sized: trains on 2 cores.
    "tiny": dict(token_dim=32, adapter_dim=64, adapter_depth=2, adapter_heads=4, gen_dim=128, gen_depth=1,
                 gen_heads=4, gen_mlp_ratio=0.5, denoiser_depth=2, denoiser_heads=4, denoiser_mlp_ratio=2.0),
    # Between the two, for a small GPU.
    "small": dict(token_dim=64, adapter_dim=256, adapter_depth=3, adapter_heads=8, gen_dim=256, gen_depth=2,
                  gen_heads=8, gen_mlp_ratio=0.25, denoiser_depth=3, denoiser_heads=4, denoiser_mlp_ratio=2.0),
    # The released code's sizes (DSTformer 512 x 5, tokens 17 x 128, generation block 256 x 2, denoiser 4 blocks).
    # adapter_rep_dim=512 is DSTformer's pre_logits and norm_eps=1e-6 MotionBERT's LayerNorm eps, so that
    # MotionBERT / released DiffMesh weights load exactly (diffmesh.released).
    "paper": dict(token_dim=128, adapter_dim=512, adapter_depth=5, adapter_heads=8, gen_dim=256, gen_depth=2,
                  gen_heads=8, gen_mlp_ratio=0.125, denoiser_depth=4, denoiser_heads=4, denoiser_mlp_ratio=2.0,
                  adapter_rep_dim=512, norm_eps=1e-6),
}


def model_config(preset: str = "tiny", **overrides) -> ModelConfig:
    """A ModelConfig from a preset name and field overrides (e.g. method='baseline1', input='features')."""
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset '{preset}'; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise SettingsError(f"unknown model setting(s) {sorted(unknown)}")
    cfg = ModelConfig(**{**PRESETS[preset], **overrides})
    cfg.validate()
    return cfg


def build_model(cfg: ModelConfig, body) -> DiffMeshModel:
    """The network for `cfg`, with the pose/shape sizes, mean pose and (anchored models) skeleton of `body`."""
    if (cfg.num_bones, cfg.num_shape, cfg.body) != (body.num_bones, body.num_shape, body.name):
        cfg = ModelConfig(**{**asdict(cfg), "num_bones": body.num_bones, "num_shape": body.num_shape, "body": body.name})
    skeleton = body.skeleton() if cfg.anchor != "none" else None
    return DiffMeshModel(cfg, body.mean_pose.cpu(), body.mean_shape.cpu(), skeleton)
