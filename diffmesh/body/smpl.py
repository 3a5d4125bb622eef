"""SMPL from the user's own files (registration-gated, never shipped): `SMPL_NEUTRAL.pkl` and
`J_regressor_h36m.npy` in one folder (optionally `smpl_mean_params.npz` for the SPIN mean pose).

The pickle is read with the restricted unpickler (numpy and scipy.sparse only; chumpy arrays become
numpy without importing chumpy). Linear blend skinning is written out in `smpl_lbs` below.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, MissingFileError
from ..rotations import rot6d_to_rotmat
from ..safe_pickle import safe_load_pickle
from .base import BodyModel, BodyOutput, Skeleton

SMPL_BONE_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
_SMPL_KEYS = {"v_template": (6890, 3), "shapedirs": (6890, 3, None), "posedirs": (6890, 3, 207),
              "J_regressor": (24, 6890), "weights": (6890, 24), "kintree_table": (2, 24), "f": (None, 3)}
_WHERE = ("register at https://smpl.is.tue.mpg.de, download 'SMPL for Python' and save its neutral model "
          "as {path} (or pass --smpl-path)")


def _check_shape(name: str, arr, expected: tuple) -> None:
    if arr.ndim != len(expected) or any(e is not None and a != e for a, e in zip(arr.shape, expected)):
        raise DataError(f"SMPL file: '{name}' has shape {tuple(arr.shape)}, expected {expected} (None = any)")


def smpl_lbs(betas: Tensor, rotmats: Tensor, v_template: Tensor, shapedirs: Tensor, posedirs: Tensor,
             J_regressor: Tensor, parents: Tensor, weights: Tensor, with_vertices: bool = True):
    """SMPL linear blend skinning.

    Args:
        betas: (B, S); rotmats: (B, 24, 3, 3); v_template: (V, 3); shapedirs: (V, 3, S);
        posedirs: (P=207, V*3) pose blend shapes; J_regressor: (24, V); parents: (24,), parents[0] = -1;
        weights: (V, 24).
    Returns:
        vertices (B, V, 3) or None, joints (B, 24, 3): both with joint 0 at the origin.
    """
    B = betas.shape[0]
    # 1. shape blend shapes and rest joints
    v_shaped = v_template + torch.einsum("bs,vcs->bvc", betas, shapedirs)
    J = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)
    # 2. rigid transforms along the kinematic tree
    rel = J.clone()
    rel[:, 1:] = J[:, 1:] - J[:, parents[1:]]
    local = torch.cat([torch.cat([rotmats, rel[..., None]], -1),
                       rotmats.new_tensor([0, 0, 0, 1]).expand(B, 24, 1, 4)], -2)  # (B, 24, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, 24):
        chain.append(chain[int(parents[i])] @ local[:, i])
    G = torch.stack(chain, 1)
    posed_joints = G[..., :3, 3]
    root = posed_joints[:, :1]
    if not with_vertices:
        return None, posed_joints - root
    # 3. pose blend shapes
    eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
    pose_feature = (rotmats[:, 1:] - eye).reshape(B, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).reshape(B, -1, 3)
    # 4. skinning: remove the rest joint from each transform, blend, apply
    A = G.clone()
    A[..., :3, 3] = G[..., :3, 3] - torch.einsum("bjcd,bjd->bjc", G[..., :3, :3], J)
    T = torch.einsum("vj,bjcd->bvcd", weights, A)
    verts = torch.einsum("bvcd,bvd->bvc", T[..., :3, :3], v_posed) + T[..., :3, 3]
    return verts - root, posed_joints - root


class SMPLBody(BodyModel):
    """SMPL behind the `BodyModel` interface: K=24 bones (SMPL order), S=10 betas, 6890 vertices."""

    name = "smpl"

    def __init__(self, model_dir: str | Path):
        super().__init__()
        model_dir = Path(model_dir)
        pkl = model_dir / "SMPL_NEUTRAL.pkl" if model_dir.is_dir() else model_dir
        model_dir = pkl.parent
        if not pkl.is_file():
            raise MissingFileError(f"SMPL model not found at {pkl}: " + _WHERE.format(path=pkl))
        reg_path = model_dir / "J_regressor_h36m.npy"
        if not reg_path.is_file():
            raise MissingFileError(
                f"Human3.6M joint regressor not found at {reg_path}: get J_regressor_h36m.npy (17x6890) from the "
                f"SPIN/VIBE data release and put it next to {pkl.name}"
            )
        data = safe_load_pickle(pkl)
        if not isinstance(data, dict):
            raise DataError(f"{pkl}: expected a pickled dict, got {type(data).__name__}")
        missing = [k for k in _SMPL_KEYS if k not in data]
        if missing:
            raise DataError(f"{pkl}: missing key(s) {missing}; is this an SMPL model file?")
        arrays = {}
        for key, expected in _SMPL_KEYS.items():
            value = data[key]
            if hasattr(value, "toarray"):
                value = value.toarray()
            value = np.asarray(value)
            _check_shape(key, value, expected)
            arrays[key] = value
        shapedirs = arrays["shapedirs"][:, :, :10]
        regressor = np.load(reg_path, allow_pickle=False)
        _check_shape("J_regressor_h36m", regressor, (17, 6890))

        f32 = dict(dtype=torch.float32)
        self.register_buffer("v_template", torch.tensor(arrays["v_template"], **f32))
        self.register_buffer("shapedirs", torch.tensor(shapedirs, **f32))
        self.register_buffer("posedirs", torch.tensor(arrays["posedirs"].reshape(-1, 207).T.copy(), **f32))
        self.register_buffer("J_regressor", torch.tensor(arrays["J_regressor"], **f32))
        self.register_buffer("J_regressor_h36m", torch.tensor(regressor, **f32))
        self.register_buffer("weights", torch.tensor(arrays["weights"], **f32))
        parents = arrays["kintree_table"][0].astype(np.int64)
        parents[0] = -1
        self.register_buffer("parents", torch.tensor(parents))
        self.register_buffer("faces", torch.tensor(arrays["f"].astype(np.int64)))
        self.num_bones, self.num_shape = 24, 10
        self.version = pkl.name

        mean_pose = torch.eye(3).repeat(24, 1, 1)
        mean_pose[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # SMPL is y-up facing +z
        mean_shape = torch.zeros(10)
        mean_path = model_dir / "smpl_mean_params.npz"
        if mean_path.is_file():
            mean = np.load(mean_path, allow_pickle=False)
            mean_pose = rot6d_to_rotmat(torch.tensor(mean["pose"], **f32).reshape(24, 6))
            mean_shape = torch.tensor(mean["shape"], **f32).reshape(10)
        self.register_buffer("mean_pose", mean_pose)
        self.register_buffer("mean_shape", mean_shape)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def skeleton(self) -> Skeleton:
        rest = self(torch.eye(3, device=self.v_template.device).expand(1, 24, 3, 3), self.mean_shape[None],
                    with_vertices=False)
        return Skeleton(SMPL_BONE_NAMES, tuple(int(p) for p in self.parents), rest.bone_heads[0])

    def forward(self, rotmats: Tensor, shape: Tensor, with_vertices: bool = True) -> BodyOutput:
        self.check_inputs(rotmats, shape)
        # The H36M regressor works on vertices, so joints always need the skinned mesh.
        verts, bone_heads = smpl_lbs(shape, rotmats, self.v_template, self.shapedirs, self.posedirs,
                                     self.J_regressor, self.parents, self.weights, with_vertices=True)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor_h36m, verts)
        return BodyOutput(joints=joints, vertices=verts if with_vertices else None, bone_heads=bone_heads)
