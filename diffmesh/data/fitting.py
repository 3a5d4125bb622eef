"""Fitting the Anny body to CMU joint positions: the ground truth the default model trains and is scored on.

Two stages (timings and errors in docs/data.md):
  1. per subject: one phenotype (shape) and one 3D offset per correspondence, fitted together with the poses of
     a sample of the subject's frames. The offsets absorb where CMU's skeleton puts a joint relative to Anny's
     bone head (CMU's arms are longer, its hips narrower); they live in the frame of the bone that moves them.
  2. per sequence, shape and offsets fixed: every frame's pose and root translation, glitch frames masked,
     a small temporal smoothness term.

Knees and elbows are one-angle hinges (their axis from the reference pose), which leaves the limb's twist to the
hip and shoulder where the ankle and wrist observe it. Bones no marker observes (wrists, feet twist, head roll)
are pulled to rest by a small penalty.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..body.anny_body import ANNY_POSED_BONES, AnnyBody
from ..rotations import rotmat_to_rotvec, rotvec_to_rotmat

# CMU joint -> Anny bone head: the pairs whose mean distance over fitted sequences is smallest (7-20 mm before
# the per-subject offsets; data/prepare.py reports the fit error).
CMU_TO_ANNY = (
    ("lfemur", "upperleg01.L"), ("ltibia", "lowerleg01.L"), ("lfoot", "foot.L"), ("ltoes", "toe2-1.L"),
    ("rfemur", "upperleg01.R"), ("rtibia", "lowerleg01.R"), ("rfoot", "foot.R"), ("rtoes", "toe2-1.R"),
    ("lowerback", "spine04"), ("upperback", "spine02"), ("thorax", "spine01"), ("upperneck", "neck02"),
    ("head", "head"),
    ("lhumerus", "upperarm01.L"), ("lradius", "lowerarm01.L"), ("lwrist", "wrist.L"),
    ("rhumerus", "upperarm01.R"), ("rradius", "lowerarm01.R"), ("rwrist", "wrist.R"),
)
# Joint groups for the fit report (indices into CMU_TO_ANNY).
JOINT_GROUPS = {"legs": tuple(range(0, 8)), "spine_head": tuple(range(8, 13)), "arms": tuple(range(13, 19))}
# Hinges: (bone, the bone at the end of its segment, direction the segment flexes toward in the reference pose).
HINGES = (("lowerleg01.L", "foot.L", (0.0, 1.0, 0.0)), ("lowerleg01.R", "foot.R", (0.0, 1.0, 0.0)),
          ("lowerarm01.L", "wrist.L", (0.0, -1.0, 0.0)), ("lowerarm01.R", "wrist.R", (0.0, -1.0, 0.0)))
_TORSO = ("lfemur", "rfemur", "lhumerus", "rhumerus", "thorax")


@dataclass
class SubjectFit:
    """shape (S,) phenotype logits; offsets (C, 3) metres, one per CMU_TO_ANNY row."""

    shape: Tensor
    offsets: Tensor


@dataclass
class SequenceFit:
    """rotmats (T, K, 3, 3) world bone rotations (bone 0 = global orientation, Anny axes z up); translation (T, 3)
    root bone head, metres; error (T, C) distance per correspondence, metres."""

    rotmats: Tensor
    translation: Tensor
    error: Tensor


class CorrespondenceModel:
    """Posed Anny points at the CMU correspondences, for a fixed or a trainable shape."""

    def __init__(self, body: AnnyBody, cmu_joint_names: tuple[str, ...]):
        self.body = body
        labels = list(body.bone_labels)
        self.cmu_index = [cmu_joint_names.index(c) for c, _ in CMU_TO_ANNY]
        self.label_index = torch.tensor([labels.index(a) for _, a in CMU_TO_ANNY])
        # The posed bone whose rotation moves each correspondence (a posed bone's head moves with its parent).
        self.anchor = torch.tensor([body.posed_parents[ANNY_POSED_BONES.index(a)] if a in ANNY_POSED_BONES
                                    else body.anchor(a) for _, a in CMU_TO_ANNY])
        self.torso = [i for i, (c, _) in enumerate(CMU_TO_ANNY) if c in _TORSO]
        self.hinge_bones = [ANNY_POSED_BONES.index(b) for b, _, _ in HINGES]
        self.free_bones = [k for k in range(1, body.num_bones) if k not in self.hinge_bones]

    def reference(self, shape: Tensor) -> tuple[Tensor, Tensor]:
        """shape (S,) -> reference heads of all bones (1, 104, 3) and hinge axes (4, 3)."""
        heads = self.body.rest_model(shape[None], with_vertices=False)["heads"]
        labels = list(self.body.bone_labels)
        axes = []
        for bone, end, flex in HINGES:
            d = heads[0, labels.index(end)] - heads[0, labels.index(bone)]
            axes.append(torch.linalg.cross(d / d.norm(), torch.tensor(flex)))
        axes = torch.stack(axes)
        return heads, axes / axes.norm(dim=-1, keepdim=True)

    def rotations(self, global_rv: Tensor, bones_rv: Tensor, hinge_angle: Tensor, axes: Tensor) -> Tensor:
        """(T, 3), (T, K-1-4, 3), (T, 4), (4, 3) -> (T, K, 3, 3)."""
        T = global_rv.shape[0]
        rv = global_rv.new_zeros(T, self.body.num_bones, 3)
        rv = rv.index_copy(1, torch.tensor([0]), global_rv[:, None])
        rv = rv.index_copy(1, torch.tensor(self.free_bones), bones_rv)
        rv = rv.index_copy(1, torch.tensor(self.hinge_bones), hinge_angle[..., None] * axes)
        return rotvec_to_rotmat(rv)

    def points(self, rotmats: Tensor, translation: Tensor, ref_heads: Tensor, offsets: Tensor) -> Tensor:
        """Posed correspondence points (T, C, 3) for rotations (T, K, 3, 3), root translation (T, 3)."""
        G, heads = self.body.posed_kinematics(rotmats, ref_heads)
        a = self.anchor
        local = ref_heads[0, self.label_index] - ref_heads[0, self.body.posed_index[a]] + offsets    # (C, 3)
        return heads[:, a] + (G[:, a] @ local[..., None])[..., 0] + translation[:, None]

    def initial_orientation(self, target: Tensor, ref_heads: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame Kabsch fit of hips, shoulders and thorax: (T, C, 3) -> rotation vectors (T, 3), translation (T, 3)."""
        src = ref_heads[0, self.label_index[self.torso]]
        dst = target[:, self.torso]
        src_c, dst_c = src - src.mean(0), dst - dst.mean(1, keepdim=True)
        U, _, Vt = torch.linalg.svd(src_c.T @ dst_c)                                       # (T, 3, 3)
        V, Ut = Vt.transpose(1, 2), U.transpose(1, 2)
        d = torch.sign(torch.linalg.det(V @ Ut))
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
        R = V @ D @ Ut
        transl = dst.mean(1) - (R @ src.mean(0)[:, None])[..., 0]
        return rotmat_to_rotvec(R), transl


def _pose_terms(model: CorrespondenceModel, target: Tensor, weight: Tensor, global_rv, bones_rv, hinge, transl,
                ref_heads, axes, offsets, smooth: float) -> tuple[Tensor, Tensor]:
    rot = model.rotations(global_rv, bones_rv, hinge, axes)
    pts = model.points(rot, transl, ref_heads, offsets)
    err = (pts - target).square().sum(-1)                                                     # (T, C)
    loss = (err * weight[:, None]).sum(1).mean()
    loss = loss + 1e-5 * bones_rv.square().sum((1, 2)).mean() + 1e-1 * torch.relu(-hinge).square().sum(1).mean()
    if smooth > 0 and target.shape[0] > 1:
        loss = loss + smooth * ((bones_rv[1:] - bones_rv[:-1]).square().sum((1, 2)).mean()
                                + (hinge[1:] - hinge[:-1]).square().sum(1).mean())
    return loss, rot


def fit_subject(body: AnnyBody, positions: np.ndarray, cmu_joint_names: tuple[str, ...], iterations: int = 400,
                lr: float = 0.03) -> SubjectFit:
    """Stage 1: shape and offsets from a sample of one subject's frames (n, J, 3), Anny axes, glitch-free."""
    model = CorrespondenceModel(body, cmu_joint_names)
    target = torch.as_tensor(positions[:, model.cmu_index], dtype=torch.float32)
    n, C = target.shape[:2]
    shape = torch.zeros(body.num_shape, requires_grad=True)
    offsets = torch.zeros(C, 3, requires_grad=True)
    with torch.no_grad():
        ref_heads, axes = model.reference(shape)
        g0, t0 = model.initial_orientation(target, ref_heads)
    global_rv, transl = g0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    bones_rv = torch.zeros(n, len(model.free_bones), 3, requires_grad=True)
    hinge = torch.full((n, 4), 0.1, requires_grad=True)
    opt = torch.optim.Adam([global_rv, transl, bones_rv, hinge, shape, offsets], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    weight = torch.ones(n)
    for _ in range(iterations):
        ref_heads, axes = model.reference(shape)
        loss, _ = _pose_terms(model, target, weight, global_rv, bones_rv, hinge, transl, ref_heads, axes, offsets, 0.0)
        loss = loss + 1e-3 * offsets.square().sum() + 1e-4 * shape.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return SubjectFit(shape.detach().clone(), offsets.detach().clone())


def fit_sequence(body: AnnyBody, positions: np.ndarray, glitch: np.ndarray, cmu_joint_names: tuple[str, ...],
                 subject: SubjectFit, iterations: int = 300, lr: float = 0.03) -> SequenceFit:
    """Stage 2: every frame's pose and translation of one sequence (T, J, 3), Anny axes; glitch (T,) frames are
    not fitted to (the smoothness term carries the pose across them)."""
    model = CorrespondenceModel(body, cmu_joint_names)
    target = torch.as_tensor(positions[:, model.cmu_index], dtype=torch.float32)
    T = target.shape[0]
    weight = torch.as_tensor(~np.asarray(glitch, bool), dtype=torch.float32)
    with torch.no_grad():
        ref_heads, axes = model.reference(subject.shape)
        g0, t0 = model.initial_orientation(target, ref_heads)
    global_rv, transl = g0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
    bones_rv = torch.zeros(T, len(model.free_bones), 3, requires_grad=True)
    hinge = torch.full((T, 4), 0.1, requires_grad=True)
    opt = torch.optim.Adam([global_rv, transl, bones_rv, hinge], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    for _ in range(iterations):
        loss, _ = _pose_terms(model, target, weight, global_rv, bones_rv, hinge, transl, ref_heads, axes,
                              subject.offsets, 1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        rot = model.rotations(global_rv, bones_rv, hinge, axes)
        error = (model.points(rot, transl, ref_heads, subject.offsets) - target).norm(dim=-1)
    return SequenceFit(rot, transl.detach().clone(), error)
