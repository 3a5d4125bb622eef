"""Load outside checkpoints into a `DiffMeshModel`: MotionBERT's pretrained DSTformer and the released DiffMesh.

Both target the 'paper' preset with keypoint input (`model_config('paper', input='keypoints')`, whose
`adapter_rep_dim=512` provides DSTformer's `pre_logits` and `norm_eps=1e-6` MotionBERT's LayerNorm eps) and, for
the released model, the SMPL body (24 bones, 10 betas). Files are read with `torch.load(weights_only=True)`;
a missing key, a wrong shape or a file of another kind raises one `CheckpointError` line, and nothing is written
into the model unless every key checks out.

Mapping (their key -> ours; C = 512 DSTformer width, d = 128 token width, T = 17 tokens, N = 30 steps, f = 16):

    DSTformer (MotionBERT 'model_pos', or 'backbone.*' of the released model)
      joints_embed                  (C, 3)          -> adapter.joint_embed
      pos_embed                     (1, 17, C)      -> adapter.spatial_pos (1, 1, 17, C)
      temp_embed                    (1, 243, 1, C)  -> adapter.temporal_pos
      blocks_st.i  *_s (spatial)                    -> adapter.st_spatial.i     (first half of stage_st)
      blocks_st.i  *_t (temporal)                   -> adapter.st_temporal.i
      blocks_ts.i  *_t (temporal)                   -> adapter.ts_temporal.i    (first half of stage_ts)
      blocks_ts.i  *_s (spatial)                    -> adapter.ts_spatial.i
         norm1_x -> norm1, norm2_x -> norm2, mlp_x.fc1 / fc2 -> mlp.0 / mlp.3, attn_x.proj -> attn.proj,
         attn_x.qkv (3C, C) -> attn.q (rows 0..C-1) and attn.kv (rows C..3C-1): their qkv output is laid out
         (3, heads, C/heads) and ours q: (heads, C/heads), kv: (2, heads, C/heads), so the rows split as they are
      ts_attn.i                     (2, 2C)         -> adapter.fuse.i
      norm                                          -> adapter.norm
      pre_logits.fc                 (C, C)          -> adapter.pre_logits.0
      head                          (3, C)          dropped (3D-pose output layer; DiffMesh reads pre_logits)

    released DiffMesh head ('head.*')
      fc_ds.0                       (d, C)          -> adapter.to_tokens.0
      ...condition_generator.fc1.0  (256, T*d)      -> generator.inp.0
      ...condition_generator.pos_embed (1, N, 256)  -> generator.pos, rows reordered: theirs are [N-f pads, f frames],
                                                       ours [f frames, N-f pads]
      ...condition_generator.blocks.j (qkv split)   -> generator.blocks.j
      ...condition_generator.norm / fc2.0           -> generator.norm / generator.out.0
      diffmesh_process.fc1.0        (d, d)          -> out.0 (T*d, T*d), block-diagonal: theirs acts per token
      head_pose / head_shape                        -> head.pose / head.shape
      init_pose (1, 144) / init_shape (1, 10)       -> head.mean_pose6d / head.mean_shape (same 6D layout: (3, 2)
                                                       columns, Gram-Schmidt; see rotations.rot6d_to_rotmat)
      mesh_template + fc_mesh_temp  -> x_end (T, d), computed: GELU(Conv1d_15->T(GELU(Linear_1378->d(
                                       template (6890, 3) transposed to (3, 6890), reshaped to (15, 1378)))))
      ...diffusion_model.*          dropped (see DENOISER_REASON)
      smpl.*                        dropped (the body model comes from SMPL_NEUTRAL.pkl)
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .checkpoint import load_weights_only
from .errors import CheckpointError
from .model import DiffMeshModel

RELEASED_EXTRA_STEPS = 14       # the released head hard-codes add_step=14: N = f + 14
MOTIONBERT_EPS = 1e-6

DENOISER_REASON = ("released denoiser (Transformer_cross): its layout cannot map onto ours (one LayerNorm shared by "
                   "the 34 mesh+condition tokens, the condition's attention map reused on the mesh stream, a DDIM "
                   "update instead of Eq. 6's inversion), and it was never trained (the released sampling loop runs "
                   "under torch.no_grad, so these are its random initialisation)")
SMPL_REASON = "SMPL body model parameters/buffers: our body model is built from SMPL_NEUTRAL.pkl (diffmesh.body)"
POSE_HEAD_REASON = "DSTformer's 3D-pose output layer (Linear C -> 3): DiffMesh reads the representation before it"
UNKNOWN_REASON = "not part of the MotionBERT / released DiffMesh layout"
NO_X_END_REASON = "the model has no x_end (method is not 'diffmesh'), so the released initial state is not used"


@dataclass
class LoadReport:
    """What a loader did. mapped: (their key, our name) pairs, in the order read; dropped: reason -> their keys;
    left_at_init: our parameters that no key wrote (they keep their initialisation); notes: warnings."""

    source: str
    mapped: list[tuple[str, str]] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    left_at_init: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        theirs, ours = len({t for t, _ in self.mapped}), len({o for _, o in self.mapped})
        lines = [f"{self.source}: {theirs} keys mapped onto {ours} of our tensors"]
        for reason, keys in self.dropped.items():
            lines.append(f"  dropped {len(keys)} key(s): {reason}")
        groups = sorted({".".join(n.split(".")[:2]) for n in self.left_at_init})
        if groups:
            lines.append(f"  {len(self.left_at_init)} parameter(s) left at initialisation: {', '.join(groups)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------- reading

def _read_state_dict(path_or_state_dict, entry: str, what: str) -> tuple[dict[str, Tensor], str]:
    """A state dict with the DataParallel 'module.' prefix removed, from a file or a dict: the payload's `entry`
    ('model_pos' or 'model') when present, else the dict itself if it holds only tensors."""
    if isinstance(path_or_state_dict, (str, Path)):
        source = str(path_or_state_dict)
        payload = load_weights_only(path_or_state_dict, what, hint="is it the file named in docs/reproduce.md?")
    else:
        payload, source = path_or_state_dict, "the given state dict"
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{source} is not a {what}: it holds a {type(payload).__name__}, not a dict")
    if entry in payload and isinstance(payload[entry], Mapping):
        sd = payload[entry]
    elif payload and all(isinstance(v, Tensor) for v in payload.values()):
        sd = payload
    else:
        keys = ", ".join(sorted(map(str, payload))[:6])
        hint = {"model_pos": "; a released DiffMesh checkpoint ('model') goes to load_released_diffmesh",
                "model": "; MotionBERT's pretrained file ('model_pos') goes to load_motionbert_backbone"}[entry]
        hint = hint if any(k != entry and k in ("model", "model_pos") for k in payload) else ""
        raise CheckpointError(f"{source} is not a {what}: no '{entry}' state dict inside (top-level keys: {keys})"
                              f"{hint}")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source} is not a {what}: '{bad[0]}' is a {type(sd[bad[0]]).__name__}, not a tensor")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}, source


class _Mapper:
    """Collects (our name -> tensor) from their state dict, checking every key and shape before anything is
    written; `commit` then loads the lot into the model."""

    def __init__(self, model: DiffMeshModel, sd: dict[str, Tensor], source: str):
        self.model, self.sd, self.source = model, sd, source
        self.ours = model.state_dict()
        self.new: dict[str, Tensor] = {}
        self.report = LoadReport(source)
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> Tensor:
        if key not in self.sd:
            raise CheckpointError(f"{self.source}: key '{key}' is missing (expected shape {tuple(shape)}); is this "
                                  f"the right kind of checkpoint?")
        t = self.sd[key]
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(f"{self.source}: '{key}' has shape {tuple(t.shape)}, the model expects "
                                  f"{tuple(shape)}; build it with model_config('paper', input='keypoints') "
                                  f"(and the SMPL body for the released model)")
        self.used.add(key)
        return t.detach().to(torch.float32)

    def shape(self, ours: str) -> tuple[int, ...]:
        return tuple(self.ours[ours].shape)

    def put(self, ours: str, value: Tensor, *theirs: str) -> None:
        assert tuple(value.shape) == self.shape(ours), (ours, value.shape, self.shape(ours))
        self.new[ours] = value.to(self.ours[ours].dtype).clone()
        self.report.mapped += [(t, ours) for t in theirs]

    def copy(self, theirs: str, ours: str, fn: Callable[[Tensor], Tensor] | None = None,
             their_shape: tuple[int, ...] | None = None) -> None:
        t = self.take(theirs, their_shape or self.shape(ours))
        self.put(ours, fn(t) if fn else t, theirs)

    def linear(self, theirs: str, ours: str) -> None:
        for p in ("weight", "bias"):
            self.copy(f"{theirs}.{p}", f"{ours}.{p}")

    def attention(self, theirs: str, ours: str) -> None:
        """Fused qkv (3C, C) -> our q (C, C) and kv (2C, C); proj as is."""
        C = self.shape(f"{ours}.q.weight")[0]
        w = self.take(f"{theirs}.qkv.weight", (3 * C, C))
        b = self.take(f"{theirs}.qkv.bias", (3 * C,))
        self.put(f"{ours}.q.weight", w[:C], f"{theirs}.qkv.weight")
        self.put(f"{ours}.kv.weight", w[C:], f"{theirs}.qkv.weight")
        self.put(f"{ours}.q.bias", b[:C], f"{theirs}.qkv.bias")
        self.put(f"{ours}.kv.bias", b[C:], f"{theirs}.qkv.bias")
        self.linear(f"{theirs}.proj", f"{ours}.proj")

    def vit_half(self, theirs: str, suffix: str, ours: str) -> None:
        """One pre-norm half-block (norm1{s}, attn{s}, norm2{s}, mlp{s}) -> our Block `ours`."""
        self.linear(f"{theirs}.norm1{suffix}", f"{ours}.norm1")
        self.attention(f"{theirs}.attn{suffix}", f"{ours}.attn")
        self.linear(f"{theirs}.norm2{suffix}", f"{ours}.norm2")
        self.linear(f"{theirs}.mlp{suffix}.fc1", f"{ours}.mlp.0")
        self.linear(f"{theirs}.mlp{suffix}.fc2", f"{ours}.mlp.3")

    def count(self, prefix: str) -> int:
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({m.group(1) for k in self.sd if (m := pat.match(k))})

    def drop(self, reason: str, pred: Callable[[str], bool]) -> None:
        keys = [k for k in self.sd if k not in self.used and pred(k)]
        if keys:
            self.report.dropped.setdefault(reason, []).extend(keys)
            self.used.update(keys)

    def commit(self) -> LoadReport:
        self.drop(UNKNOWN_REASON, lambda k: True)
        self.model.load_state_dict(self.new, strict=False)
        written = set(self.new)
        self.report.left_at_init = [n for n, _ in self.model.named_parameters() if n not in written]
        if self.model.cfg.norm_eps != MOTIONBERT_EPS:
            self.report.notes.append(f"the model's LayerNorm eps is {self.model.cfg.norm_eps:g}, MotionBERT/DiffMesh "
                                     f"used {MOTIONBERT_EPS:g}: outputs differ slightly (the 'paper' preset sets it)")
        return self.report


# ---------------------------------------------------------------- the two loaders

def _check_model(model: DiffMeshModel, source: str) -> None:
    cfg = model.cfg
    if cfg.input != "keypoints":
        raise CheckpointError(f"{source} holds a keypoint backbone (DSTformer) but the model takes input="
                              f"'{cfg.input}'; build it with model_config('paper', input='keypoints')")
    if model.adapter.pre_logits is None:
        raise CheckpointError(f"{source}: the model has no pre_logits layer (adapter_rep_dim=0); build it with "
                              f"model_config('paper', ...) or adapter_rep_dim=512")


def _map_backbone(m: _Mapper, p: str) -> None:
    """DSTformer keys under prefix `p` -> model.adapter (see the module docstring)."""
    cfg = m.model.cfg
    m.linear(f"{p}joints_embed", "adapter.joint_embed")
    _, _, J, C = m.shape("adapter.spatial_pos")
    m.copy(f"{p}pos_embed", "adapter.spatial_pos", lambda t: t[:, None], their_shape=(1, J, C))
    m.copy(f"{p}temp_embed", "adapter.temporal_pos")
    for stack in ("blocks_st", "blocks_ts"):
        n = m.count(f"{p}{stack}.")
        if n != cfg.adapter_depth:
            raise CheckpointError(f"{m.source}: {n} DSTformer '{p}{stack}' layers, the model has adapter_depth="
                                  f"{cfg.adapter_depth}; build it with model_config('paper', ...)")
    for i in range(cfg.adapter_depth):
        m.vit_half(f"{p}blocks_st.{i}", "_s", f"adapter.st_spatial.{i}")
        m.vit_half(f"{p}blocks_st.{i}", "_t", f"adapter.st_temporal.{i}")
        m.vit_half(f"{p}blocks_ts.{i}", "_t", f"adapter.ts_temporal.{i}")
        m.vit_half(f"{p}blocks_ts.{i}", "_s", f"adapter.ts_spatial.{i}")
        m.linear(f"{p}ts_attn.{i}", f"adapter.fuse.{i}")
    m.linear(f"{p}norm", "adapter.norm")
    m.linear(f"{p}pre_logits.fc", "adapter.pre_logits.0")
    m.drop(POSE_HEAD_REASON, lambda k: k.startswith(f"{p}head."))


def load_motionbert_backbone(model: DiffMeshModel, path_or_state_dict) -> LoadReport:
    """MotionBERT's pretrained DSTformer (`latest_epoch.bin`, weights under 'model_pos' with 'module.' keys)
    -> `model.adapter` (all of it but `to_tokens`, which DSTformer does not have). Returns a LoadReport."""
    sd, source = _read_state_dict(path_or_state_dict, "model_pos", "MotionBERT checkpoint")
    _check_model(model, source)
    m = _Mapper(model, sd, source)
    _map_backbone(m, "")
    return m.commit()


def released_x_end(template: Tensor, lin_w: Tensor, lin_b: Tensor, conv_w: Tensor, conv_b: Tensor) -> Tensor:
    """The released initial state: template (1, V, 3) -> (3, V) -> (15, V/5) -> Linear(V/5 -> d) -> GELU ->
    Conv1d(15 -> T, kernel 1) -> GELU -> (T, d). Computed in float64, returned as float32."""
    x = template.double().reshape(-1, 3).T.reshape(15, -1)                       # (15, 1378): 5 rows per axis
    h = F.gelu(x @ lin_w.double().T + lin_b.double())                            # (15, d)
    out = F.gelu(conv_w.double()[:, :, 0] @ h + conv_b.double()[:, None])        # (T, d)
    return out.float()


def load_released_diffmesh(model: DiffMeshModel, path_or_state_dict) -> LoadReport:
    """The released DiffMesh checkpoint (zczcwh/DiffMesh: state dict under 'model', keys 'module.backbone.*' and
    'module.head.*') -> the model's adapter, condition generator, output residual, mesh head and x_end.
    The released denoiser and SMPL are dropped (see the module docstring); returns a LoadReport."""
    sd, source = _read_state_dict(path_or_state_dict, "model", "released DiffMesh checkpoint")
    if "head.fc2.0.weight" in sd and "head.init_pose" not in sd:
        raise CheckpointError(
            f"{source} is the released refinement (HybrIK) checkpoint; its head cannot map onto ours: it encodes "
            "HybrIK's pose as matrix rows but decodes its output as columns, so its residual undoes that mix-up and "
            "means nothing in a consistent layout. Train dstformer-3dpw-refine with --init-backbone instead")
    _check_model(model, source)
    if not hasattr(model, "generator"):
        raise CheckpointError(f"{source}: the model (method='{model.cfg.method}') has no condition generator; "
                              f"build it with method='diffmesh'")
    cfg = model.cfg
    m = _Mapper(model, sd, source)
    _map_backbone(m, "backbone.")
    m.linear("head.fc_ds.0", "adapter.to_tokens.0")

    g = "head.diffmesh_process.entire_process.condition_generator."
    n = m.count(f"{g}blocks.")
    if n != cfg.gen_depth:
        raise CheckpointError(f"{source}: {n} condition-generator blocks, the model has gen_depth={cfg.gen_depth}")
    N, f = cfg.num_steps, cfg.num_frames
    if N - f != RELEASED_EXTRA_STEPS:
        raise CheckpointError(f"{source}: the released model runs N = f + {RELEASED_EXTRA_STEPS} steps, the model has "
                              f"num_frames={f}, num_steps={N}; use num_frames=16, num_steps=30")
    m.linear(f"{g}fc1.0", "generator.inp.0")
    # theirs: [N-f zero pads, f frames]; ours: [f frames, N-f zero pads]
    m.copy(f"{g}pos_embed", "generator.pos", lambda t: torch.cat([t[:, N - f:], t[:, :N - f]], 1))
    for j in range(cfg.gen_depth):
        blk = f"{g}blocks.{j}"
        m.linear(f"{blk}.norm1", f"generator.blocks.{j}.norm1")
        m.attention(f"{blk}.attn", f"generator.blocks.{j}.attn")
        m.linear(f"{blk}.norm2", f"generator.blocks.{j}.norm2")
        m.linear(f"{blk}.mlp.fc1", f"generator.blocks.{j}.mlp.0")
        m.linear(f"{blk}.mlp.fc2", f"generator.blocks.{j}.mlp.3")
    m.linear(f"{g}norm", "generator.norm")
    m.linear(f"{g}fc2.0", "generator.out.0")

    T, d = cfg.num_tokens, cfg.token_dim
    m.copy("head.diffmesh_process.fc1.0.weight", "out.0.weight", lambda w: torch.block_diag(*[w] * T),
           their_shape=(d, d))
    m.copy("head.diffmesh_process.fc1.0.bias", "out.0.bias", lambda b: b.repeat(T), their_shape=(d,))
    m.linear("head.head_pose", "head.pose")
    m.linear("head.head_shape", "head.shape")
    for theirs, ours in (("head.init_pose", "head.mean_pose6d"), ("head.init_shape", "head.mean_shape")):
        m.copy(theirs, ours, lambda t: t.reshape(-1), their_shape=(1,) + m.shape(ours))     # (1, K*6) / (1, S)

    x_end_keys = ["head.mesh_template", "head.fc_mesh_temp.0.weight", "head.fc_mesh_temp.0.bias",
                  "head.fc_mesh_temp.2.weight", "head.fc_mesh_temp.2.bias"]
    if hasattr(model, "x_end"):
        shapes = [(1, 6890, 3), (d, 1378), (d,), (T, 15, 1), (T,)]
        parts = [m.take(k, s) for k, s in zip(x_end_keys, shapes)]
        m.put("x_end", released_x_end(*parts), *x_end_keys)
    else:
        m.drop(NO_X_END_REASON, lambda k: k in x_end_keys)
    m.drop(DENOISER_REASON, lambda k: k.startswith("head.diffmesh_process.entire_process.diffusion_model."))
    m.drop(SMPL_REASON, lambda k: k.startswith("head.smpl."))
    report = m.commit()
    report.notes.append("head.camera has no released counterpart (the released model predicts no camera)")
    return report
