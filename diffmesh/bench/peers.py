"""Compact re-implementations of three video mesh-recovery peers' temporal heads, for speed comparisons only.

TCMR (Choi et al., CVPR 2021), MPS-Net (Wei et al., CVPR 2022) and GLoT (Shen et al., CVPR 2023) all take a
window of 16 per-frame 2048-d ResNet-50 (SPIN) features and predict SMPL parameters of the window's centre frame
(index 8) at inference. Each model here has the released configuration's layers and sizes and the SPIN/HMR
iterative regressor it ships with, so that its parameter count (without the SMPL body model) equals the released
checkpoint's exactly (`PEER_PARAMETERS`). Weights are random: these modules exist to time inference, not to
predict anything. Written from the released code's layer sizes (no code taken from it):

- TCMR: hongsukchoi/TCMR_RELEASE lib/models/tcmr.py + lib/models/spin.py (Regressor),
  configs/repr_table4_3dpw_model.yaml (MODEL.TGRU: NUM_LAYERS 2, HIDDEN_SIZE 1024; DATASET.SEQLEN 16; demo.py too).
- MPS-Net: MPS-Net/MPS-Net_release lib/models/mpsnet.py (TemporalEncoder = MoCA + HAFI) + lib/models/spin.py.
- GLoT: sxl142/GLoT lib/models/{GLoT,GMM,HSCR,transformer_global,transformer_local,trans_operator,spin}.py,
  configs/repr_table1_3dpw.yaml (d_model 512, n_layers 2, num_head 8, short_d_model 256, short_n_layers 3,
  stride_short 4, mask_ratio 0.5).

Inference only: dropout and drop-path (identity in eval) are left out; attention uses
`F.scaled_dot_product_attention` (the same maths as the released explicit softmax(QK^T/sqrt(d))V).
The SMPL body model is not part of these modules (the benchmark poses one body per predicted frame); note that the
released models pose more bodies per window than that: see `Peer.smpl_bodies_per_window`.

`sliding_windows` builds the per-frame windows the peers' demo and evaluation code feed them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..rotations import rot6d_to_rotmat, rotmat_to_rot6d

PEER_PARAMETERS = {"tcmr": 81_907_360, "mpsnet": 12_646_050, "glot": 16_743_948}
PEER_NAMES = tuple(PEER_PARAMETERS)
FEATURE_DIM = 2048
SEQLEN = 16
NPOSE = 24 * 6
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def sliding_windows(features: Tensor, seqlen: int = SEQLEN, pad: str = "self") -> Tensor:
    """One window of `seqlen` frames per frame of a video, that frame at index seqlen // 2 (where the peers read
    their output at inference).

    Args:
        features: (T, D) per-frame features.
        pad: how windows that would run past either end are filled.
            'self' (default): the peers' own convention (`FeatureDataset` in lib/dataset/_dataset_demo.py of
                TCMR, MPS-Net and GLoT, and `get_sequence` in their evaluate.py): frame t gets frames
                t-8 .. t+7 when all exist (8 <= t <= T-8 for seqlen 16), otherwise frame t repeated seqlen times.
            'edge': frames t-8 .. t+7 with indices clamped to [0, T-1] (repeat the first/last frame).
    Returns:
        (T, seqlen, D) windows.
    """
    if features.ndim != 2:
        raise ValueError(f"features must have shape (T, D), got {tuple(features.shape)}")
    T, half = features.shape[0], seqlen // 2
    t = torch.arange(T, device=features.device)[:, None]
    idx = t + torch.arange(seqlen, device=features.device) - half  # (T, seqlen), idx[t, half] = t
    if pad == "edge":
        idx = idx.clamp(0, T - 1)
    elif pad == "self":
        inside = (idx[:, :1] >= 0) & (idx[:, -1:] <= T - 1)
        idx = torch.where(inside, idx, t)
    else:
        raise ValueError(f"pad must be 'self' or 'edge', got '{pad}'")
    return features[idx]


# ---------------------------------------------------------------- shared parts

class SpinRegressor(nn.Module):
    """The HMR/SPIN iterative regressor VIBE, TCMR, MPS-Net and GLoT ship (lib/models/spin.py `Regressor`):
    [feature 2048, pose 144 (6D), shape 10, cam 3] -> fc1 1024 -> fc2 1024 -> residual pose/shape/cam, 3 times,
    from the SMPL mean parameters (buffers, as released: `register_buffer('init_pose', ...)`).

    use_fc2=False skips fc2 in forward like GLoT's copy of the regressor does; fc2 still exists there
    (1,049,600 parameters counted only to match the released total)."""

    def __init__(self, feature_dim: int = FEATURE_DIM, hidden: int = 1024, use_fc2: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + NPOSE + 13, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.decpose = nn.Linear(hidden, NPOSE)
        self.decshape = nn.Linear(hidden, 10)
        self.deccam = nn.Linear(hidden, 3)
        for layer in (self.decpose, self.decshape, self.deccam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
        self.use_fc2 = use_fc2
        # Stand-in for smpl_mean_params.npz: rest pose with SMPL's root turned to face the camera, mean-ish camera.
        mean_pose = torch.eye(3).repeat(24, 1, 1)
        mean_pose[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
        self.register_buffer("init_pose", rotmat_to_rot6d(mean_pose).reshape(1, NPOSE))
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.tensor([[0.9, 0.0, 0.0]]))

    def forward(self, x: Tensor, n_iter: int = 3) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, feature_dim) -> pose (N, 144) 6D, shape (N, 10), cam (N, 3)."""
        N = x.shape[0]
        pose, shape, cam = (p.expand(N, -1) for p in (self.init_pose, self.init_shape, self.init_cam))
        for _ in range(n_iter):
            h = self.fc1(torch.cat([x, pose, shape, cam], 1))
            if self.use_fc2:
                h = self.fc2(h)
            pose, shape, cam = self.decpose(h) + pose, self.decshape(h) + shape, self.deccam(h) + cam
        return pose, shape, cam


def _smpl_params(pose6d: Tensor, shape: Tensor, cam: Tensor) -> dict[str, Tensor]:
    return {"rotmats": rot6d_to_rotmat(pose6d.reshape(-1, 24, 6)), "betas": shape, "cam": cam}


class TemporalAttention(nn.Module):
    """TCMR's (and MPS-Net's HAFI) score network over n features of 2048: fc 2048->256 per feature, then
    256n -> 256 -> 256 -> n with tanh, softmax; returns the score-weighted sum of the n features."""

    def __init__(self, dim: int = FEATURE_DIM, n: int = 3):
        super().__init__()
        self.fc = nn.Linear(dim, 256)
        self.attention = nn.Sequential(nn.Linear(256 * n, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                                       nn.Linear(256, n), nn.Tanh())

    def forward(self, y: Tensor) -> Tensor:
        """y: (B, n, dim) -> (B, dim)."""
        scores = self.attention(self.fc(y).flatten(1)).softmax(-1)
        return (y * scores[..., None]).sum(1)


class Peer(nn.Module):
    """Common interface: forward(features (B, 16, 2048)) -> dict of the window's centre frame (index 8):
    rotmats (B, 24, 3, 3), betas (B, 10), cam (B, 3) (weak-perspective s, tx, ty)."""

    name: str
    # Bodies the released model passes through SMPL per window at inference (not done here).
    smpl_bodies_per_window: int = 1

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1:] != (SEQLEN, FEATURE_DIM):
            raise ValueError(f"{self.name}: features must have shape (B, {SEQLEN}, {FEATURE_DIM}), "
                             f"got {tuple(x.shape)}")


# ---------------------------------------------------------------- TCMR

class TCMR(Peer):
    """TCMR (released: n_layers 2, hidden_size 1024, seqlen 16). Three GRU encoders over the window: a
    bidirectional one over all 16 frames (read at the centre frame), a forward one over frames 0-7 and one over
    frames 15..9 reversed (both read at their last step); each goes through ReLU and a linear map to 2048; the
    three features are fused by `TemporalAttention` and regressed. Every parameter is used at inference."""

    name = "tcmr"

    def __init__(self, hidden: int = 1024, num_layers: int = 2):
        super().__init__()
        gru = dict(input_size=FEATURE_DIM, hidden_size=hidden, num_layers=num_layers, batch_first=True)
        self.gru_cur = nn.GRU(bidirectional=True, **gru)
        self.gru_bef = nn.GRU(**gru)
        self.gru_aft = nn.GRU(**gru)
        self.linear_cur = nn.Linear(2 * hidden, FEATURE_DIM)
        self.linear_bef = nn.Linear(hidden, FEATURE_DIM)
        self.linear_aft = nn.Linear(hidden, FEATURE_DIM)
        self.attention = TemporalAttention(FEATURE_DIM, 3)
        self.regressor = SpinRegressor()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        mid = SEQLEN // 2
        y_cur = self.linear_cur(F.relu(self.gru_cur(x)[0][:, mid]))
        y_bef = self.linear_bef(F.relu(self.gru_bef(x[:, :mid])[0][:, -1]))
        y_aft = self.linear_aft(F.relu(self.gru_aft(x[:, mid + 1:].flip(1))[0][:, -1]))
        feature = self.attention(torch.stack([y_bef, y_cur, y_aft], 1))
        return _smpl_params(*self.regressor(feature))


# ---------------------------------------------------------------- MPS-Net

class MPSNet(Peer):
    """MPS-Net (released `MPSnet`, its `nonlocalblock` = MoCA + HAFI). MoCA: a non-local block over the 16 frames,
    2048 -> 1024 (theta, phi, g: 1x1 convs without bias, here bias-free linears, same weights), whose attention
    map is mixed with the plain feature-similarity map softmax(X X^T) by a 1x1 conv over the two maps (2 weights),
    then 1024 -> 2048 back and a residual. HAFI: one `TemporalAttention` (shared) fuses frames (4,5,6), (7,8,9),
    (10,11,12) and then the three results. The released forward also runs the regressor (and SMPL) on all 16
    MoCA frames even at inference (`smpl_output_Dm`, a training-loss branch); `with_all_frames=True` keeps that
    regressor pass so timings include it."""

    name = "mpsnet"
    smpl_bodies_per_window = 1 + SEQLEN

    def __init__(self, with_all_frames: bool = True):
        super().__init__()
        inter = FEATURE_DIM // 2
        self.theta = nn.Linear(FEATURE_DIM, inter, bias=False)
        self.phi = nn.Linear(FEATURE_DIM, inter, bias=False)
        self.g = nn.Linear(FEATURE_DIM, inter, bias=False)
        self.mask = nn.Linear(inter, FEATURE_DIM, bias=False)
        self.mix = nn.Conv2d(2, 1, kernel_size=1, bias=False)  # 'conv_mask_forR'
        self.attention = TemporalAttention(FEATURE_DIM, 3)
        self.regressor = SpinRegressor()
        self.with_all_frames = with_all_frames

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        sim = (x @ x.transpose(1, 2)).softmax(-1)                                  # (B, 16, 16)
        att = (self.theta(x) @ self.phi(x).transpose(1, 2)).softmax(-1)
        # The release builds the 2-channel map with cat(dim=0).view(B, 2, 16, 16), which pairs maps across the
        # batch for B > 1; stacking per sample (what the paper describes) costs the same.
        y = self.mix(torch.stack([sim, att], 1))[:, 0].softmax(-1)
        out = self.mask(y @ self.g(x)) + x                                         # (B, 16, 2048)
        groups = out[:, 4:13].unflatten(1, (3, 3))                                 # (B, 3 groups, 3 frames, 2048)
        fused = self.attention(groups.flatten(0, 1)).view(x.shape[0], 3, FEATURE_DIM)
        feature = self.attention(fused)
        if self.with_all_frames:
            self.regressor(out.reshape(-1, FEATURE_DIM))  # released inference computes it; its output is unused
        return _smpl_params(*self.regressor(feature))


# ---------------------------------------------------------------- GLoT

class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, cross: bool = False):
        super().__init__()
        self.heads, self.cross = heads, cross
        if cross:  # GLoT's CrossAttention: q from the query tokens, k/v from the memory, no q/k/v bias
            self.q_l = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv_l = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mem: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        if self.cross:
            q = self.q_l(x).view(B, N, self.heads, -1).transpose(1, 2)
            k, v = self.kv_l(mem).view(B, mem.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.qkv(x).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


class _Block(nn.Module):
    """Pre-norm transformer block (GLoT's trans_operator.Block): LayerNorm(eps 1e-6), MHSA with qkv bias,
    LayerNorm, MLP dim -> hidden -> dim with GELU."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Encoder(nn.Module):
    """Learned positional embedding (an nn.Parameter in the release), blocks, final LayerNorm."""

    def __init__(self, length: int, dim: int, depth: int, heads: int, hidden: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _ancestors(parents=SMPL_PARENTS) -> list[list[int]]:
    anc: list[list[int]] = []
    for p in parents:
        anc.append([] if p < 0 else anc[p] + [p])
    return anc


class HSCR(nn.Module):
    """GLoT's Hierarchical Spatial Correlation Regressor (one pass, from the global branch's estimate):
    [x 256, shape 10] -> fc1 1024 -> shape, [x 256, pose 144] -> fc2 1024 -> pose by the kinematic-tree decoder
    (one linear per joint on [hidden 1024, its ancestors' new 6D poses, 6 global-pose values] -> 6D),
    [hidden_pose, hidden_shape, cam] 2051 -> cam. The tree decoder's own `decshape`/`deccam` (1024 -> 10, 1024 -> 3)
    exist in the release but are never called: counted only to match the released total."""

    def __init__(self, dim: int = 256, hidden: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(dim + 10, hidden)
        self.fc2 = nn.Linear(dim + NPOSE, hidden)
        self.decshape = nn.Linear(hidden, 10)
        self.deccam = nn.Linear(2 * hidden + 3, 3)
        self.ancestors = _ancestors()
        self.joint_regs = nn.ModuleList(nn.Linear(hidden + 6 * len(a) + 6, 6) for a in self.ancestors)
        for reg in self.joint_regs:
            nn.init.xavier_uniform_(reg.weight, gain=0.01)
        self.unused_ktd_decshape = nn.Linear(hidden, 10)  # only to match the released count (KTD.decshape)
        self.unused_ktd_deccam = nn.Linear(hidden, 3)     # only to match the released count (KTD.deccam)

    def forward(self, x: Tensor, pose: Tensor, shape: Tensor, cam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h_shape = self.fc1(torch.cat([x, shape], -1))
        h_pose = self.fc2(torch.cat([x, pose], -1))
        joint_poses: list[Tensor] = []
        for j, (anc, reg) in enumerate(zip(self.ancestors, self.joint_regs)):
            # The release slices the global pose at [j : j + 6] (a step of 1, not 6); kept as released.
            joint_poses.append(reg(torch.cat([h_pose] + [joint_poses[a] for a in anc] + [pose[:, j:j + 6]], -1)))
        new_pose = torch.cat(joint_poses, -1) + pose
        new_shape = self.decshape(h_shape) + shape
        new_cam = self.deccam(torch.cat([h_pose, h_shape, cam], -1)) + cam
        return new_pose, new_shape, new_cam


class GLoT(Peer):
    """GLoT (released configuration: d_model 512, n_layers 2, 8 heads, short_d_model 256, short_n_layers 3,
    stride_short 4, seqlen 16).

    Global branch (GMM): 2048 -> 512, + learned positions, 2 blocks (512, MLP 2048), LayerNorm = memory; decoder:
    512 -> 256, + learned positions, 1 block (256, MLP 1024), LayerNorm; 256 -> 2048 on every frame; SPIN
    regressor (3 iterations, fc2 skipped as released) on the centre frame -> global estimate.
    Local branch: frames 4..12 -> 256, + learned positions (9), 3 blocks (256, MLP 1024), LayerNorm; tokens 3..5
    (frames 7..9) cross-attend to the memory projected 512 -> 256; the middle token -> HSCR from the global estimate.

    Only to match the released count (training-time masked modelling, never used at inference): the mask-token
    MLP 157 -> 256 -> 512 -> 256 (303,360 parameters); plus the unused SPIN fc2 and the tree decoder's unused
    heads noted in `SpinRegressor` and `HSCR`."""

    name = "glot"
    smpl_bodies_per_window = 2  # the global estimate is posed too

    def __init__(self, d_model: int = 512, n_layers: int = 2, heads: int = 8, short_d_model: int = 256,
                 short_n_layers: int = 3, short_heads: int = 8, stride_short: int = 4):
        super().__init__()
        self.stride = stride_short
        self.proj = nn.Linear(FEATURE_DIM, d_model)
        self.encoder = _Encoder(SEQLEN, d_model, n_layers, heads, 4 * d_model)
        self.decoder_embed = nn.Linear(d_model, d_model // 2)
        self.decoder = _Encoder(SEQLEN, d_model // 2, n_layers // 2, heads, 2 * d_model)
        self.mask_token_mlp = nn.Sequential(  # only to match the released count (training-time mask tokens)
            nn.Linear(NPOSE + 13, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, d_model // 2))
        self.out_proj = nn.Linear(d_model // 2, FEATURE_DIM)
        self.global_regressor = SpinRegressor(use_fc2=False)
        self.proj_short = nn.Linear(FEATURE_DIM, short_d_model)
        self.local_encoder = _Encoder(2 * stride_short + 1, short_d_model, short_n_layers, short_heads,
                                      4 * short_d_model)
        self.proj_mem = nn.Linear(d_model, short_d_model)
        self.local_decoder = _Attention(short_d_model, 8, qkv_bias=False, cross=True)
        self.regressor = HSCR(short_d_model)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        mid, s = SEQLEN // 2, self.stride
        mem = self.encoder(self.proj(x))                                    # (B, 16, 512)
        pred = self.decoder(self.decoder_embed(mem))                        # (B, 16, 256)
        global_est = self.global_regressor(self.out_proj(pred)[:, mid])
        local = self.local_encoder(self.proj_short(x[:, mid - s:mid + s + 1]))
        out = self.local_decoder(local[:, s - 1:s + 2], self.proj_mem(mem))  # (B, 3, 256)
        return _smpl_params(*self.regressor(out[:, 1], *global_est))


# ---------------------------------------------------------------- factory

_PEERS = {"tcmr": TCMR, "mpsnet": MPSNet, "glot": GLoT}


def build_peer(name: str, seed: int = 0) -> Peer:
    """A peer by name ('tcmr' | 'mpsnet' | 'glot'), randomly initialised from `seed` (the global RNG is left as
    it was), in eval mode."""
    if name not in _PEERS:
        raise ValueError(f"unknown peer '{name}'; choose one of {PEER_NAMES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _PEERS[name]()
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
