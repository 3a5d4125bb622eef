"""The one small interface every body model implements.

A body model maps per-frame bone rotations and a shape vector to vertices, faces, the 17 Human3.6M
joints and a skeleton (names, parents, rest positions) that the exporters use. Bone 0 is always the
root; its rotation is the global orientation. Outputs are in metres, root (pelvis bone) at the origin.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

H36M_JOINT_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)
H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
# Left/right swap of the Human3.6M-17 joints (used by flip augmentation and the 2D noise model).
H36M_FLIP = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)


@dataclass
class Skeleton:
    """The bones a body model poses.

    names: K bone names; parents: (K,) index of each bone's parent among the K, -1 for the root;
    rest_heads: (K, 3) bone head positions in the rest pose, metres.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    rest_heads: Tensor


@dataclass
class BodyOutput:
    """What a body model returns for a batch of B bodies.

    joints: (B, 17, 3) Human3.6M-17 joints, metres, in the frame the root rotation defines;
    vertices: (B, V, 3) or None when only joints were asked for;
    bone_heads: (B, K, 3) posed heads of the K posed bones.
    """

    joints: Tensor
    vertices: Tensor | None
    bone_heads: Tensor


@dataclass
class BindPose:
    """One body shape in the pose that skinned exports (glTF, BVH) bind the mesh in, root bone head at the origin,
    metres, in the body's own axes.

    vertices: (V, 3) bind-pose mesh; heads: (K, 3) bind-pose heads of the K posed bones; parents, names: as in
    `Skeleton`; skin_indices: (V, 4) int64 bone indices among the K; skin_weights: (V, 4) float32, each row summing
    to 1 (a vertex's four largest influences, renormalised); upright: (3, 3) rotation from the body's axes to Y up,
    facing +Z (the rest frame of glTF and BVH). Bone rotations act in world-aligned axes at this pose
    (`chain_kinematics`), so posing bone k moves its vertices by x -> G_k (x - heads_k) + posed head_k.
    """

    vertices: Tensor
    heads: Tensor
    parents: tuple[int, ...]
    names: tuple[str, ...]
    skin_indices: Tensor
    skin_weights: Tensor
    upright: Tensor


class BodyModel(nn.Module):
    """Abstract body model. Subclasses set the attributes below and implement `forward`.

    Attributes:
        name: 'anny' or 'smpl'; version: the package or file version it came from.
        num_bones: K, the number of posed bones (rotations the network predicts), root first.
        num_shape: S, the size of the shape vector (Anny: phenotype logits, SMPL: betas).
        faces: (F, 3) int64 triangle indices.
        mean_pose: (K, 3, 3) the pose the mesh head starts from (root rotation puts the body
            upright, facing the camera, in camera axes: x right, y down, z forward).
        mean_shape: (S,) the shape the mesh head starts from.
    """

    name: str
    version: str
    num_bones: int
    num_shape: int

    def skeleton(self) -> Skeleton:
        raise NotImplementedError

    def bind_pose(self, shape: Tensor) -> BindPose:
        """The skinning data of one body shape (S,) for exporters (see `BindPose`)."""
        raise NotImplementedError

    def forward(self, rotmats: Tensor, shape: Tensor, with_vertices: bool = True) -> BodyOutput:
        """Pose the body.

        Args:
            rotmats: (B, K, 3, 3) bone rotations; bone 0 is the global orientation.
            shape: (B, S) shape vector.
            with_vertices: skip skinning (faster) when False; `vertices` is then None.
        Returns:
            BodyOutput with joints (B, 17, 3), vertices (B, V, 3) or None, bone heads (B, K, 3).
        """
        raise NotImplementedError

    def clip_joints(self, rotmats: Tensor, shape: Tensor) -> Tensor:
        """Joints of B clips of f frames that each keep one shape: rotmats (B, f, K, 3, 3), shape (B, S) ->
        (B, f, 17, 3). Body models override it when sharing the shape makes it cheaper."""
        B, f = rotmats.shape[:2]
        return self(rotmats.flatten(0, 1), shape.repeat_interleave(f, 0), with_vertices=False).joints.view(B, f, -1, 3)

    def pose_in_chunks(self, rotmats: Tensor, shape: Tensor, chunk: int = 256, with_vertices: bool = True
                       ) -> Iterator[tuple[slice, BodyOutput]]:
        """Pose many bodies (N, K, 3, 3), (N, S) `chunk` at a time, so memory stays bounded however long the
        sequence: yields (the chunk's slice of the N, its BodyOutput). Every caller that poses whole sequences
        (outputs, metrics, exports, benchmarks) goes through here."""
        for start in range(0, len(rotmats), chunk):
            part = slice(start, start + chunk)
            yield part, self(rotmats[part], shape[part], with_vertices=with_vertices)

    def check_inputs(self, rotmats: Tensor, shape: Tensor) -> None:
        """Raise ValueError with a clear message when the inputs have the wrong shape."""
        if rotmats.ndim != 4 or rotmats.shape[1:] != (self.num_bones, 3, 3):
            raise ValueError(
                f"{self.name}: rotations must have shape (B, {self.num_bones}, 3, 3), got {tuple(rotmats.shape)}"
            )
        if shape.ndim != 2 or shape.shape != (rotmats.shape[0], self.num_shape):
            raise ValueError(
                f"{self.name}: shape must have shape ({rotmats.shape[0]}, {self.num_shape}), got {tuple(shape.shape)}"
            )


@torch.inference_mode()
def joints_per_shape(body: "BodyModel", rotmats: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Human3.6M joints (T, 17, 3) float32 of posed frames (joints only, no skinning): rotmats (T, K, 3, 3),
    shapes (T, S). Frames that share a shape (a person) are posed together from one rest model, which is what
    costs time."""
    out = np.zeros((len(rotmats), 17, 3), np.float32)
    if len(rotmats) == 0:
        return out
    unique, inverse = np.unique(shapes, axis=0, return_inverse=True)
    for u, shape in enumerate(unique):
        idx = np.where(inverse.reshape(-1) == u)[0]
        joints = body.clip_joints(torch.from_numpy(rotmats[idx])[None], torch.from_numpy(shape)[None])[0]
        out[idx] = joints.numpy()
    return out


def chain_kinematics(rotmats: Tensor, rest_heads: Tensor, parents: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Forward kinematics of a tree whose bone rotations act in world-aligned axes at the rest pose
    (SMPL's convention and Anny's 'local-ref'): G_k = G_parent R_k, p_k = p_parent + G_parent (h_k - h_parent).

    Args:
        rotmats: (B, K, 3, 3) bone rotations, root first; rest_heads: (B or 1, K, 3) rest head positions;
        parents: K parent indices (-1 for the root), each parent before its children.
    Returns:
        global rotations (B, K, 3, 3) and posed heads (B, K, 3); the root head stays at its rest position.
    """
    B, K = rotmats.shape[:2]
    rest_heads = rest_heads.expand(B, K, 3)
    rots, heads = [], []
    for k, p in enumerate(parents):
        if p < 0:
            rots.append(rotmats[:, k])
            heads.append(rest_heads[:, k])
        else:
            rots.append(rots[p] @ rotmats[:, k])
            heads.append(heads[p] + (rots[p] @ (rest_heads[:, k] - rest_heads[:, p])[..., None])[..., 0])
    return torch.stack(rots, 1), torch.stack(heads, 1)


def camera_upright_root() -> Tensor:
    """(3, 3) rotation taking a Z-up body that faces -Y to camera axes (y down, z forward), facing the camera."""
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
