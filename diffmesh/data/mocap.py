"""CMU motion capture (`shared/data/mocap/cmu_30fps.npz`) and a joint-position fit of the Anny body to it.

The fit here is the light version used by `diffmesh demo` and the tests (joints only, per-clip phenotype,
~20 mm mean error); `diffmesh prepare` (issue 4) builds the full ground-truth fits on top of it.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..body.anny_body import AnnyBody
from ..errors import DataError, MissingFileError
from ..rotations import rotmat_to_rotvec, rotvec_to_rotmat

# The project's shared data folder: $DIFFMESH_SHARED, else `shared/` beside the repository.
SHARED_DIR = Path(os.environ.get("DIFFMESH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DEFAULT_MOCAP = SHARED_DIR / "data" / "mocap" / "cmu_30fps.npz"
_KEYS = ("joint_names", "parents", "seq_names", "seq_subject", "seq_split", "seq_start", "seq_len",
         "world_pos", "frame_glitch", "fps")
# CMU joint -> Anny bone head (correspondences measured in shared/docs/stack-notes.md).
CMU_TO_ANNY = (
    ("lfemur", "upperleg01.L"), ("ltibia", "lowerleg01.L"), ("lfoot", "foot.L"), ("ltoes", "toe2-1.L"),
    ("rfemur", "upperleg01.R"), ("rtibia", "lowerleg01.R"), ("rfoot", "foot.R"), ("rtoes", "toe2-1.R"),
    ("lowerback", "spine04"), ("upperback", "spine02"), ("thorax", "spine01"), ("upperneck", "neck02"),
    ("head", "head"),
    ("lhumerus", "upperarm01.L"), ("lradius", "lowerarm01.L"), ("lwrist", "wrist.L"),
    ("rhumerus", "upperarm01.R"), ("rradius", "lowerarm01.R"), ("rwrist", "wrist.R"),
)
# CMU is y-up; Anny is z-up: (x, y, z)_cmu -> (x, -z, y)_anny, a +90 degree rotation about x.
CMU_TO_ANNY_AXES = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float32)


@dataclass
class MocapClip:
    """positions (T, J, 3) world joints in metres, Anny axes (z up); glitch (T,) bool; name 'SS_TT'; fps."""

    name: str
    positions: np.ndarray
    glitch: np.ndarray
    joint_names: tuple[str, ...]
    fps: float


class CMUMocap:
    """Reader for cmu_30fps.npz (layout in its README)."""

    def __init__(self, path: str | Path = DEFAULT_MOCAP):
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"CMU mocap file not found: {path}; it ships in the project's shared/data/mocap/ "
                                   "folder (pass --mocap PATH to point at it)")
        try:
            data = np.load(path, allow_pickle=False)
            missing = [k for k in _KEYS if k not in data.files]
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is not a readable .npz ({e}); copy cmu_30fps.npz again") from None
        if missing:
            raise DataError(f"{path} lacks key(s) {missing}; is it cmu_30fps.npz?")
        self.path, self._data = path, data
        self.joint_names = tuple(str(n) for n in data["joint_names"])
        self.seq_names = [str(n) for n in data["seq_names"]]
        self.seq_split = [str(s) for s in data["seq_split"]]
        self.seq_subject = [str(s) for s in data["seq_subject"]]
        self.fps = float(data["fps"])

    def names(self, split: str | None = None) -> list[str]:
        """Sequence names, optionally of one split ('train', 'val', 'test')."""
        names = [n for n, s in zip(self.seq_names, self.seq_split) if split is None or s == split]
        if split is not None and not names:
            raise DataError(f"split '{split}' of {self.path} is empty; use train, val or test")
        return names

    def clip(self, name: str, start: int = 0, length: int | None = None) -> MocapClip:
        """Frames [start, start+length) of sequence `name`, in Anny axes."""
        if name not in self.seq_names:
            raise DataError(f"sequence '{name}' is not in {self.path}")
        i = self.seq_names.index(name)
        s, n = int(self._data["seq_start"][i]), int(self._data["seq_len"][i])
        length = n - start if length is None else length
        if start < 0 or length < 1 or start + length > n:
            raise DataError(f"sequence {name} has {n} frames; frames {start}..{start + length} are out of range")
        pos = self._data["world_pos"][s + start:s + start + length].astype(np.float32) @ CMU_TO_ANNY_AXES.T
        glitch = self._data["frame_glitch"][s + start:s + start + length].astype(bool)
        return MocapClip(f"{name}[{start}:{start + length}]", pos, glitch, self.joint_names, self.fps)


@dataclass
class AnnyFit:
    """A clip of the Anny body fitted to mocap: rotmats (T, K, 3, 3) with the global orientation in bone 0,
    translation (T, 3) of the root, shape (S,) phenotype logits; error_mm (T,) mean joint error per frame."""

    rotmats: Tensor
    translation: Tensor
    shape: Tensor
    error_mm: np.ndarray


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) minimising ||R src - dst|| for centred point sets (n, 3)."""
    U, _, Vt = np.linalg.svd(src.T @ dst)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    return Vt.T @ np.diag([1, 1, d]) @ U.T


def fit_anny(body: AnnyBody, clip: MocapClip, iterations: int = 300, lr: float = 0.03) -> AnnyFit:
    """Fit per-frame bone rotations, root translation and one phenotype to the clip's joint positions.

    Joints only (no skinning); glitch frames are masked; a small temporal smoothness term keeps the motion
    continuous. Returns an AnnyFit (see its docstring).
    """
    labels = list(body.bone_labels)
    cmu_idx = [clip.joint_names.index(c) for c, _ in CMU_TO_ANNY]
    anny_idx = torch.tensor([labels.index(a) for _, a in CMU_TO_ANNY])
    target = torch.tensor(clip.positions[:, cmu_idx])                            # (T, C, 3)
    weight = torch.tensor(~clip.glitch, dtype=torch.float32)[:, None]
    T, K = target.shape[0], body.num_bones

    # Initial global orientation per frame from hips and shoulders (Kabsch against the rest pose).
    rest = body.all_bone_heads(torch.eye(3).repeat(1, K, 1, 1), torch.zeros(1, body.num_shape))[0, anny_idx].numpy()
    torso = [i for i, (c, _) in enumerate(CMU_TO_ANNY) if c in ("lfemur", "rfemur", "lhumerus", "rhumerus", "thorax")]
    root_rv = []
    for t in range(T):
        src = rest[torso] - rest[torso].mean(0)
        dst = clip.positions[t, [cmu_idx[i] for i in torso]]
        R = _kabsch(src, dst - dst.mean(0))
        root_rv.append(torch.as_tensor(R, dtype=torch.float32))
    global_rv = rotmat_to_rotvec(torch.stack(root_rv)).clone().requires_grad_(True)          # (T, 3)
    bones_rv = torch.zeros(T, K - 1, 3, requires_grad=True)
    shape = torch.zeros(body.num_shape, requires_grad=True)
    transl = (target.mean(1) - torch.tensor(rest.mean(0))).clone().requires_grad_(True)
    opt = torch.optim.Adam([global_rv, bones_rv, shape, transl], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    for _ in range(iterations):
        rot = torch.cat([rotvec_to_rotmat(global_rv)[:, None], rotvec_to_rotmat(bones_rv)], 1)
        heads = body.all_bone_heads(rot, shape[None])[:, anny_idx] + transl[:, None]
        err = (heads - target).square().sum(-1)                                  # (T, C)
        loss = (err * weight).mean() + 1e-4 * bones_rv.square().mean()
        if T > 1:
            loss = loss + 1e-2 * (bones_rv[1:] - bones_rv[:-1]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        rot = torch.cat([rotvec_to_rotmat(global_rv)[:, None], rotvec_to_rotmat(bones_rv)], 1)
        heads = body.all_bone_heads(rot, shape[None])[:, anny_idx] + transl[:, None]
        error = (heads - target).norm(dim=-1).mean(-1).numpy() * 1000
    return AnnyFit(rot.detach(), transl.detach(), shape.detach(), error)
