"""Training clips drawn from the rendered MediaPipe set (`renders.py`): real MediaPipe keypoints as the inputs, the
rendered truth as the targets, in exactly the layout `synthetic.ClipMaker` gives the training loop.

Why: the synthetic clips put a noise model on exact projections; MediaPipe's real errors (drift, swaps, missing
frames, its world landmarks) are only seen on the rendered set, so training on it teaches the model what
`diffmesh run` will feed it. The inputs are built as the video pipeline builds them (`pipeline.keypoints_h36m`):
NaN landmarks of frames without a pose become zeros with confidence 0, the 33 -> 17 mapping, `normalize_clip`.

Channels (`model.KEYPOINT_CHANNELS`): "2d+vis" (x, y, MediaPipe visibility, as `diffmesh run` today); "2d" (x, y, 1 where
MediaPipe returned a pose, 0 elsewhere; the box of `normalize_clip` is then set by every joint of those frames);
"2d+3d" (x, y, visibility, then MediaPipe's world landmarks through the same 33 -> 17 grouping (`keypoints.world_h36m`),
pelvis subtracted, metres, zeros where no pose).

Targets: rotmats (f, K, 3, 3) with the root turned into the camera frame (R_cam R_root), shape (S,), joints3d
root-relative in camera axes, keypoints2d = (true pixels - centre) / scale with the inputs' box, valid = not a fit
glitch and MediaPipe returned a pose.

Augmentations (`Augment`, all off with `Augment.off()` for validation):
- speed: the clip samples the file at t0 + s k (k < f), s log-uniform in `speed`; positions, keypoints, world
  landmarks and visibility linearly interpolated, rotations by slerp (`rotations.interpolate`, `rotations.slerp_at`),
  glitch and "returned" from the nearest frame. A sample next to a frame without a pose takes its nearest frame's
  keypoints (interpolating towards the zeros of a missing frame would invent a point).
- mirror: left and right swapped, image x mirrored about the principal point (x -> width - x before the
  normalisation, i.e. x -> -x after it), camera X of joints and world landmarks negated, and the Anny rotations
  mirrored (`mirror_rotmats`).

The mirror of Anny's rotations. With M = diag(-1, 1, 1) and `ANNY_FLIP` swapping the .L/.R bones, plain
conjugation R'_k = M R_flip(k) M (root in the camera frame) is exact only when the rest heads are mirror-symmetric.
Anny's are, except the neck chain: neck02, neck03 and head sit 0.1-2 mm off the midline (the template is not
symmetric there), so plain conjugation leaves 1.2 mm (default shape) to 3-4.3 mm (other shapes, measured) at the
nose and head joints. `mirror_frames` finds per bone a rest rotation C_k that takes its children's rest offsets
onto their mirror images (identity everywhere except neck01..neck03), and R'_k = C_parent^T M R_flip(k) M C_k
gives posed global rotations M G_flip(k) M C_k and heads exactly M p_flip(k) (residual < 0.002 mm, float32); it
is its own inverse. Caveat: C is 0.6-5 degrees for most shapes, but where a neck bone is very short (the neck03 ->
head offset is ~3 mm for some small bodies) it can be a large rotation (122 degrees measured), so that bone's
rotation target is re-expressed in a turned frame: joints exact, the neck region's mesh not the mirrored mesh.
`mirror="conjugate"` selects the plain version.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from ..body.anny_body import ANNY_POSED_BONES
from ..body.base import H36M_FLIP
from ..keypoints import model_keypoints, normalize_clip
from ..losses import Targets
from ..model import KEYPOINT_CHANNELS
from ..rotations import interpolate, slerp_at
from .synthetic import stack_clips

MIRROR = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)


def _flip_name(name: str) -> str:
    if name.endswith(".L"):
        return name[:-2] + ".R"
    if name.endswith(".R"):
        return name[:-2] + ".L"
    return name


# Anny's posed bones with left and right swapped (from the names: ".L" <-> ".R").
ANNY_FLIP = tuple(ANNY_POSED_BONES.index(_flip_name(n)) for n in ANNY_POSED_BONES)


def _turn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) taking direction a onto direction b."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3)
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + K + K @ K / (1 + c)


def mirror_frames(rest_heads: np.ndarray, parents: tuple[int, ...], flip: tuple[int, ...] = ANNY_FLIP,
                  tol: float = 1e-7) -> np.ndarray:
    """Per-bone rest corrections C (K, 3, 3) of the exact mirror (see the module docstring): C_k takes the rest
    offsets b_c = h_c - h_k of bone k's children onto M b_flip(c); identity where they already match. rest_heads
    (K, 3) are the posed bones' rest heads of one shape (`AnnyBody.rest_model(...)["heads"][:, posed_index]`)."""
    h = np.asarray(rest_heads, np.float64)
    M = MIRROR.astype(np.float64)
    C = np.repeat(np.eye(3)[None], len(parents), 0)
    for k in range(len(parents)):
        kids = [c for c, p in enumerate(parents) if p == k]
        src = np.array([h[c] - h[k] for c in kids]).reshape(-1, 3)
        dst = np.array([M @ (h[flip[c]] - h[flip[k]]) for c in kids]).reshape(-1, 3)
        if not kids or np.abs(src - dst).max() < tol:
            continue
        if len(kids) == 1:
            C[k] = _turn(src[0], dst[0])
        else:                                    # Kabsch: the rotation best taking src onto dst
            U, _, Vt = np.linalg.svd(src.T @ dst)
            D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
            C[k] = Vt.T @ D @ U.T
    return C.astype(np.float32)


def mirror_rotmats(rotmats: np.ndarray, parents: tuple[int, ...], frames: np.ndarray | None = None,
                   flip: tuple[int, ...] = ANNY_FLIP) -> np.ndarray:
    """The mirrored body's rotations (..., K, 3, 3) (root in the frame being mirrored, here the camera's):
    R'_k = C_parent^T M R_flip(k) M C_k with `frames` C from `mirror_frames`, plain M R_flip(k) M without."""
    M = MIRROR.astype(rotmats.dtype)
    out = M @ rotmats[..., list(flip), :, :] @ M
    if frames is not None:
        C = frames.astype(rotmats.dtype)
        Cp = np.stack([C[p] if p >= 0 else np.eye(3, dtype=rotmats.dtype) for p in parents])
        out = np.swapaxes(Cp, -1, -2) @ out @ C
    return out


@dataclass
class Augment:
    """Training augmentations of the rendered clips; `Augment.off()` for validation."""

    speed: tuple[float, float] = (0.8, 1.25)   # playback-speed factor s, log-uniform
    speed_prob: float = 1.0                    # probability that a clip's speed is changed
    mirror_prob: float = 0.5                   # probability of a left/right mirrored clip

    @classmethod
    def off(cls) -> "Augment":
        return cls(speed_prob=0.0, mirror_prob=0.0)


def _file_arrays(d: dict, channels: str) -> dict:
    """The per-frame arrays of one render file a clip reads, prepared once: `kp` the model's per-frame inputs
    (T, 17, C) exactly as `diffmesh run` builds them (`keypoints.model_keypoints`, pixels before normalisation)."""
    returned = np.asarray(d["mp_returned"], bool)
    kp = model_keypoints(np.where(returned[:, None, None], d["mp_landmarks"], np.nan), d["mp_visibility"],
                         d["mp_world"], channels)
    R = np.asarray(d["camera_R"], np.float32)
    rot = np.asarray(d["rotmats"], np.float32).copy()
    rot[:, 0] = R @ rot[:, 0]
    jc = np.asarray(d["joints_cam"], np.float32)
    return dict(kp=kp, returned=returned, glitch=np.asarray(d["glitch"], bool), rotmats=rot,
                joints3d=jc - jc[:, :1], px=np.asarray(d["joints_px"], np.float32), shape=np.asarray(d["shape"]),
                width=float(d["width"]), frames=len(returned))


def _sample(values: np.ndarray, pos: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """values (T, ...) at fractional frames pos (f,), linearly; a sample whose two frames are not both `ok`
    (T,) takes its nearest frame's value."""
    out = interpolate(values, pos)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(values) - 1)
    i1 = np.minimum(i0 + 1, len(values) - 1)
    near = ~(ok[i0] & ok[i1])
    out[near] = values[np.rint(pos[near]).astype(np.int64)]
    return out


def _mirror_points(x: np.ndarray) -> np.ndarray:
    """(..., 17, 3) camera-axes points: X negated, left and right joints swapped."""
    return x[..., list(H36M_FLIP), :] * np.array([-1.0, 1.0, 1.0], x.dtype)


def _mirror_pixels(xy: np.ndarray, width: float, keep: np.ndarray | None = None) -> np.ndarray:
    """(f, 17, C>=2) pixels mirrored about the principal point (x -> width - x), left/right swapped; frames where
    `keep` (f,) is False (no pose: zeros, as `diffmesh run` gives them) only swapped."""
    out = xy[..., list(H36M_FLIP), :].copy()
    rows = slice(None) if keep is None else keep
    out[rows, :, 0] = width - out[rows, :, 0]
    return out


@dataclass
class RenderClipMaker:
    """f-frame clips of rendered MediaPipe files (`renders.load_render_set`) as model inputs and targets, laid
    out as `synthetic.ClipMaker` lays them (see the module docstring). A clip is addressed by a global start
    index over the files concatenated (`window_starts`). `body` (an AnnyBody) is only needed to mirror
    (`mirror="frames"`) and is loaded on first use when not given."""

    files: list
    num_frames: int = 16
    channels: str = "2d+vis"
    augment: Augment = field(default_factory=Augment)
    mirror: str = "frames"            # "frames": exact (`mirror_frames`); "conjugate": plain M R M
    body: object = None

    def __post_init__(self):
        if self.channels not in KEYPOINT_CHANNELS:
            raise ValueError(f"channels must be one of {tuple(KEYPOINT_CHANNELS)}, got {self.channels!r}")
        if self.mirror not in ("frames", "conjugate"):
            raise ValueError(f"mirror must be 'frames' or 'conjugate', got {self.mirror!r}")
        self._arrays = [_file_arrays(d, self.channels) for d in self.files]
        lengths = np.array([a["frames"] for a in self._arrays], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._frames_cache: dict[int, np.ndarray] = {}

    @property
    def num_channels(self) -> int:
        return KEYPOINT_CHANNELS[self.channels]

    def window_starts(self, stride: int = 1) -> np.ndarray:
        """Global first frames of all f-frame windows (every `stride`) that stay inside one file."""
        f = self.num_frames
        starts = [o + np.arange(0, n - f + 1, stride) for o, n in zip(self._offsets[:-1], np.diff(self._offsets))
                  if n >= f]
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def _positions(self, local: int, T: int, speed: float) -> np.ndarray:
        """The f fractional frames a clip at `local` samples with speed s: t0 + s k, moved back (or s reduced)
        so that they stay inside the file."""
        span = min(speed * (self.num_frames - 1), T - 1)
        step = span / max(self.num_frames - 1, 1)
        t0 = min(float(local), T - 1 - span)
        pos = t0 + step * np.arange(self.num_frames)
        return np.where(np.abs(pos - np.rint(pos)) < 1e-9, np.rint(pos), pos)

    def _draw(self, rng: np.random.Generator, speed, mirror) -> tuple[float, bool]:
        """The clip's speed and mirror (given ones win; the generator is drawn from the same way either way)."""
        a = self.augment
        u_speed, log_s, u_mirror = rng.random(), rng.uniform(*np.log(a.speed)), rng.random()
        s = float(np.exp(log_s)) if u_speed < a.speed_prob else 1.0
        return (s if speed is None else float(speed)), (bool(u_mirror < a.mirror_prob) if mirror is None
                                                          else bool(mirror))

    def _rest_frames(self, i: int) -> np.ndarray | None:
        """The mirror corrections of file i's body shape (cached), or None for the plain conjugation."""
        if self.mirror == "conjugate":
            return None
        if i not in self._frames_cache:
            if self.body is None:
                from ..body.anny_body import AnnyBody

                self.body = AnnyBody()
            with torch.no_grad():
                shape = torch.as_tensor(self._arrays[i]["shape"], dtype=torch.float32)[None]
                rest = self.body.rest_model(shape, with_vertices=False)["heads"][0, self.body.posed_index]
            self._frames_cache[i] = mirror_frames(rest.numpy(), self.body.posed_parents)
        return self._frames_cache[i]

    def make(self, start: int, rng: np.random.Generator, speed: float | None = None, mirror: bool | None = None
             ) -> tuple[np.ndarray, dict]:
        """One clip: inputs (f, 17, C) normalised keypoints (C = 3, or 6 for "2d+3d"); targets as numpy arrays
        (rotmats, shape, joints3d, keypoints2d, valid; see `synthetic.ClipMaker.make`). `speed` and `mirror`
        override the augmentation's draws (the generator is consumed the same way)."""
        i = int(np.searchsorted(self._offsets, start, side="right") - 1)
        a = self._arrays[i]
        s, flip = self._draw(rng, speed, mirror)
        pos = self._positions(int(start - self._offsets[i]), a["frames"], s)
        near = np.rint(pos).astype(np.int64)
        ret, every = a["returned"], np.ones(a["frames"], bool)
        returned = ret[near]
        kp = _sample(a["kp"], pos, ret)                                   # (f, 17, C)
        px = _sample(a["px"], pos, every)
        joints3d = _sample(a["joints3d"], pos, every)
        rotmats = slerp_at(a["rotmats"], pos)
        if flip:
            mirrored = [_mirror_pixels(kp[..., :3], a["width"], returned)]
            kp = np.concatenate(mirrored + ([_mirror_points(kp[..., 3:])] if kp.shape[-1] > 3 else []), -1)
            px, joints3d = _mirror_pixels(px, a["width"]), _mirror_points(joints3d)
            frames = self._rest_frames(i)
            parents = self.body.posed_parents if frames is not None else ()
            rotmats = mirror_rotmats(rotmats, parents, frames)
        inputs, centre, scale = normalize_clip(kp)
        targets = dict(rotmats=rotmats.astype(np.float32), shape=a["shape"].astype(np.float32),
                       joints3d=joints3d.astype(np.float32), keypoints2d=((px - centre) / scale).astype(np.float32),
                       valid=~a["glitch"][near] & returned)
        return inputs.astype(np.float32), targets

    def batch(self, starts, rngs, speeds=None, mirrors=None) -> tuple[torch.Tensor, Targets]:
        """Clips at `starts`, one generator each -> inputs (B, f, 17, C) and Targets (as `ClipMaker.batch`)."""
        speeds = speeds if speeds is not None else [None] * len(starts)
        mirrors = mirrors if mirrors is not None else [None] * len(starts)
        return stack_clips([self.make(int(s), r, v, m) for s, r, v, m in zip(starts, rngs, speeds, mirrors)])
