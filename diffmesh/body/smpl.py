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
from .base import BindPose, BodyModel, BodyOutput, Skeleton

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

    @classmethod
    def from_random(cls, seed: int = 0) -> "SMPLBody":
        """An SMPLBody whose buffers are random but of SMPL's real shapes, dtypes and kinematic tree, for timing
        when no SMPL file is at hand (its meshes mean nothing). Nothing is read from disk."""
        g = torch.Generator().manual_seed(seed)
        V, num_faces = 6890, 13776
        obj = cls.__new__(cls)
        BodyModel.__init__(obj)
        obj.register_buffer("v_template", torch.randn(V, 3, generator=g) * 0.3)
        obj.register_buffer("shapedirs", torch.randn(V, 3, 10, generator=g) * 0.01)
        obj.register_buffer("posedirs", torch.randn(207, V * 3, generator=g) * 0.001)  # stored (207, V*3) as above
        j_reg = torch.rand(24, V, generator=g)
        obj.register_buffer("J_regressor", j_reg / j_reg.sum(1, keepdim=True))
        h36m = torch.rand(17, V, generator=g)
        obj.register_buffer("J_regressor_h36m", h36m / h36m.sum(1, keepdim=True))
        obj.register_buffer("weights", torch.randn(V, 24, generator=g).mul(3).softmax(1))
        obj.register_buffer("parents", torch.tensor([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                                                     17, 18, 19, 20, 21]))
        obj.register_buffer("faces", torch.randint(0, V, (num_faces, 3), generator=g))
        obj.num_bones, obj.num_shape = 24, 10
        obj.version = "random (timing only)"
        mean_pose = torch.eye(3).repeat(24, 1, 1)
        mean_pose[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # as __init__ without smpl_mean_params.npz
        obj.register_buffer("mean_pose", mean_pose)
        obj.register_buffer("mean_shape", torch.zeros(10))
        return obj

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def skeleton(self) -> Skeleton:
        rest = self(torch.eye(3, device=self.v_template.device).expand(1, 24, 3, 3), self.mean_shape[None],
                    with_vertices=False)
        return Skeleton(SMPL_BONE_NAMES, tuple(int(p) for p in self.parents), rest.bone_heads[0])

    @torch.no_grad()
    def bind_pose(self, shape: Tensor) -> BindPose:
        """Skinning data for exporters (a `BindPose`) of betas (S,): the shaped template and its regressed joints,
        moved so the pelvis is at the origin, with each vertex's four largest weights. Pose blend shapes have no
        place in glTF/BVH skinning, so exported meshes lack them (the skinning itself is SMPL's, exactly)."""
        v_shaped = self.v_template + torch.einsum("s,vcs->vc", shape.to(self.v_template), self.shapedirs)
        joints = self.J_regressor @ v_shaped
        weights, indices = self.weights.topk(4, dim=1)
        return BindPose(vertices=v_shaped - joints[0], heads=joints - joints[0],
                        parents=tuple(int(p) for p in self.parents), names=SMPL_BONE_NAMES, skin_indices=indices,
                        skin_weights=weights / weights.sum(1, keepdim=True),
                        upright=torch.eye(3, device=v_shaped.device))  # SMPL is already y up, facing +z

    def forward(self, rotmats: Tensor, shape: Tensor, with_vertices: bool = True) -> BodyOutput:
        self.check_inputs(rotmats, shape)
        # The H36M regressor works on vertices, so joints always need the skinned mesh.
        verts, bone_heads = smpl_lbs(shape, rotmats, self.v_template, self.shapedirs, self.posedirs,
                                     self.J_regressor, self.parents, self.weights, with_vertices=True)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor_h36m, verts)
        return BodyOutput(joints=joints, vertices=verts if with_vertices else None, bone_heads=bone_heads)
