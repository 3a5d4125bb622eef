"""The open default body: Anny (PyPI `anny`, Apache-2.0 code, CC0 data), fully offline.

The network poses 24 body bones (root, spine, neck, head, clavicles, arms, legs, feet); fingers,
toes, eyes and the twist segments stay at rest. Shape is Anny's six phenotype values (gender, age,
muscle, weight, height, proportions), each in [0, 1]; the shape vector S=6 holds their logits, so
0 is Anny's default body (all 0.5) and any real vector is a valid body.

Anny's first construction on a machine writes a ~790 MB cache to `~/.cache/anny` (or
`$ANNY_CACHE_DIR`) in about a minute; later constructions take under a second. `make` builds it once.
"""

from functools import lru_cache

import roma
import torch
import warp
from torch import Tensor

from ..quiet import native_stderr_silenced

warp.config.log_level = warp.LOG_ERROR
with native_stderr_silenced():      # anny initialises warp on import
    import anny

from .base import BindPose, BodyModel, BodyOutput, Skeleton, camera_upright_root, chain_kinematics

ANNY_POSED_BONES = (
    "root",
    "upperleg01.L", "lowerleg01.L", "foot.L",
    "upperleg01.R", "lowerleg01.R", "foot.R",
    "spine05", "spine04", "spine03", "spine02", "spine01",
    "clavicle.L", "upperarm01.L", "lowerarm01.L", "wrist.L",
    "clavicle.R", "upperarm01.R", "lowerarm01.R", "wrist.R",
    "neck01", "neck02", "neck03", "head",
)
# Human3.6M-17 joints as Anny bone heads (mapping checked on rest positions, see docs/method.md).
ANNY_H36M_BONES = (
    "root", "upperleg01.R", "lowerleg01.R", "foot.R", "upperleg01.L", "lowerleg01.L", "foot.L",
    "spine03", "neck01", "neck03", "head",
    "upperarm01.L", "lowerarm01.L", "wrist.L", "upperarm01.R", "lowerarm01.R", "wrist.R",
)


@lru_cache(maxsize=4)
def _load_anny(topology: str) -> anny.Anny:
    # One construction per process: the model is read-only for us, so every AnnyBody shares it. It is built
    # outside `torch.inference_mode` even when the first caller is inside it, and so is the constant that roma
    # (which Anny calls for its rest bone frames) caches per device on first use: an inference tensor kept in
    # either would make every later autograd use of the body in the process fail ("Inference tensors cannot be
    # saved for backward"), e.g. a fit or a training step after a `diffmesh run` in one process.
    with torch.inference_mode(False), torch.no_grad():
        with native_stderr_silenced():          # warp's missing-CUDA notice on CPU machines
            model = anny.Anny(topology=topology).to(torch.float32)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        roma.special_procrustes(torch.eye(3).expand(1, 3, 3).clone())
    return model


class AnnyBody(BodyModel):
    """Anny behind the `BodyModel` interface (see base.py for shapes)."""

    name = "anny"

    def __init__(self, topology: str = "anny"):
        super().__init__()
        model = _load_anny(topology)
        # Kept out of the module tree: the body is a fixed function, not part of our state dict.
        object.__setattr__(self, "_anny", model)
        self.version = anny.__version__
        self.topology = topology
        labels = list(model.bone_labels)
        self.num_bones = len(ANNY_POSED_BONES)
        self.num_shape = len(model.phenotype_labels)
        self.phenotype_labels = tuple(model.phenotype_labels)
        self.register_buffer("posed_index", torch.tensor([labels.index(b) for b in ANNY_POSED_BONES]))
        self.register_buffer("joint_index", torch.tensor([labels.index(b) for b in ANNY_H36M_BONES]))
        self.register_buffer("faces", model.get_triangular_faces().long())
        mean_pose = torch.eye(3).repeat(self.num_bones, 1, 1)
        mean_pose[0] = camera_upright_root()
        self.register_buffer("mean_pose", mean_pose)
        self.register_buffer("mean_shape", torch.zeros(self.num_shape))
        self._all_labels = labels
        self._all_parents = [int(p) for p in model.bone_parents]
        self.posed_parents = tuple(self.anchor(labels[p]) if p >= 0 else -1
                                   for p in (self._all_parents[i] for i in self.posed_index.tolist()))
        self._h36m_in_posed = [ANNY_POSED_BONES.index(b) for b in ANNY_H36M_BONES]

    @property
    def num_vertices(self) -> int:
        return self._anny.template_vertices.shape[0]

    def anchor(self, label: str) -> int:
        """Index among the posed bones of the bone that moves `label`'s head rigidly: the bone itself if it is
        posed, else its nearest posed ancestor (fingers, toes, twist segments and eyes stay at rest)."""
        i = self._all_labels.index(label)
        while self._all_labels[i] not in ANNY_POSED_BONES:
            i = self._all_parents[i]
        return ANNY_POSED_BONES.index(self._all_labels[i])

    def skeleton(self) -> Skeleton:
        rest = self.rest_model(self.mean_shape[None], with_vertices=False)["heads"][0, self.posed_index]
        return Skeleton(tuple(ANNY_POSED_BONES), self.posed_parents, rest.detach())

    @torch.no_grad()
    def bind_pose(self, shape: Tensor) -> BindPose:
        """Skinning data for exporters (a `BindPose`) of shape logits (S,): the reference pose (identity rotations,
        `rest_model`) with each vertex's weights over Anny's bones summed onto their anchor posed bones, which
        carry the unposed ones rigidly, then cut to the four largest. Anny skins its blendshape rest pose, whose
        bone frames differ from the reference ones by up to ~7 degrees, so skinning the reference pose is not exact
        where a vertex blends posed and unposed bones (hips, spine, shoulders): 0.1 mm mean, a few mm at the worst
        vertex, plus up to ~1.5 cm from the four-influence cut (tests/test_export.py measures both)."""
        rest = self.rest_model(shape[None])
        model = self._anny
        anchors = torch.tensor([self.anchor(label) for label in self._all_labels], device=shape.device)
        idx = model.vertex_bone_indices.to(shape.device)                     # (V, 9) into the 104 bones
        dense = shape.new_zeros(idx.shape[0], self.num_bones)
        dense.scatter_add_(1, anchors[idx], model.vertex_bone_weights.to(shape))
        weights, indices = dense.topk(4, dim=1)
        upright = shape.new_tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # z up, -y front -> y up, +z
        return BindPose(vertices=rest["vertices"][0], heads=rest["heads"][0, self.posed_index],
                        parents=self.posed_parents, names=tuple(ANNY_POSED_BONES), skin_indices=indices,
                        skin_weights=weights / weights.sum(1, keepdim=True), upright=upright)

    def rest_model(self, shape: Tensor, with_vertices: bool = True) -> dict[str, Tensor]:
        """The body at identity rotations (Anny's reference pose, which differs from its blendshape rest pose by
        a few cm) for shape logits (B, S): heads (B, 104, 3) of all bones (order of `bone_labels`) and, with_vertices,
        vertices (B, V, 3). Root bone head at the origin, metres, z up, facing -Y. The fast kinematics start here."""
        identity = torch.eye(3, dtype=shape.dtype, device=shape.device).expand(shape.shape[0], self.num_bones, 3, 3)
        transforms, poses, rest = self._pose(identity, shape)
        out = {"heads": poses[..., :3, 3]}
        if with_vertices:
            out["vertices"] = self._anny.get_skinned_vertices(rest["rest_vertices"].expand(shape.shape[0], -1, -1),
                                                              transforms)
        return out

    def clip_joints(self, rotmats: Tensor, shape: Tensor) -> Tensor:
        """Joints of B clips that each keep one shape: rotmats (B, f, K, 3, 3), shape (B, S) -> (B, f, 17, 3).
        One rest model per clip instead of per frame."""
        B, f = rotmats.shape[:2]
        rest = self.rest_model(shape, with_vertices=False)["heads"]                       # (B, 104, 3)
        rest = rest[:, None].expand(B, f, *rest.shape[1:]).flatten(0, 1)
        _, heads = self.posed_kinematics(rotmats.flatten(0, 1), rest)
        return heads[:, self._h36m_in_posed].view(B, f, -1, 3)

    def posed_kinematics(self, rotmats: Tensor, rest_heads: Tensor) -> tuple[Tensor, Tensor]:
        """Fast joints-only kinematics over the 24 posed bones (exactly Anny's 'local-ref' FK, see
        `chain_kinematics`): rotmats (B, K, 3, 3), rest_heads (B or 1, 104, 3) from `rest_model` ->
        global rotations (B, K, 3, 3), heads (B, K, 3)."""
        return chain_kinematics(rotmats, rest_heads[:, self.posed_index], self.posed_parents)

    def phenotypes(self, shape: Tensor) -> Tensor:
        """Shape logits (B, 6) -> Anny phenotype values (B, 6) in [0, 1]."""
        return torch.sigmoid(shape)

    def _pose(self, rotmats: Tensor, shape: Tensor) -> tuple[Tensor, Tensor, dict]:
        """Anny forward kinematics: (B, K, 3, 3), (B or 1, S) -> skinning transforms and world poses of all
        bones (B, 104, 4, 4), and the rest model."""
        model = self._anny
        if model.template_vertices.device != rotmats.device:
            model.to(rotmats.device)
        B = rotmats.shape[0]
        # (B, 104, 4, 4) deltas in Anny's 'local-ref' parameterisation (world-aligned axes at rest).
        deltas = torch.eye(4, dtype=rotmats.dtype, device=rotmats.device).repeat(B, len(self._all_labels), 1, 1)
        deltas[:, self.posed_index, :3, :3] = rotmats
        coeffs = model._get_phenotype_blendshape_coefficients(
            self.phenotypes(shape),
            rotmats.new_zeros(1, len(model.local_change_labels)),
            rotmats.new_zeros(1, len(model.facial_action_labels)),
        )
        rest = model.get_rest_model(coeffs)
        transforms, poses = model.get_bone_transforms(deltas, rest["rest_bone_poses"], "local-ref")
        return transforms, poses, rest

    def all_bone_heads(self, rotmats: Tensor, shape: Tensor) -> Tensor:
        """Heads of all of Anny's bones (B, 104, 3), in the order of `bone_labels` (used by the mocap fit)."""
        return self._pose(rotmats, shape)[1][..., :3, 3]

    @property
    def bone_labels(self) -> tuple[str, ...]:
        return tuple(self._all_labels)

    def forward(self, rotmats: Tensor, shape: Tensor, with_vertices: bool = True) -> BodyOutput:
        self.check_inputs(rotmats, shape)
        if not with_vertices:
            _, heads = self.posed_kinematics(rotmats, self.rest_model(shape, with_vertices=False)["heads"])
            return BodyOutput(joints=heads[:, self._h36m_in_posed], vertices=None, bone_heads=heads)
        transforms, poses, rest = self._pose(rotmats, shape)
        heads = poses[..., :3, 3]  # (B, 104, 3)
        vertices = None
        if with_vertices:
            vertices = self._anny.get_skinned_vertices(rest["rest_vertices"].expand(rotmats.shape[0], -1, -1), transforms)
        return BodyOutput(joints=heads[:, self.joint_index], vertices=vertices, bone_heads=heads[:, self.posed_index])
