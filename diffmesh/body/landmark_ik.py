"""Analytic inverse kinematics: Human3.6M-17 3D joints (MediaPipe's world landmarks, `keypoints.world_h36m`) ->
Anny bone rotations, the per-frame initial pose an input-anchored model refines (model.py, `ModelConfig.anchor`).

Why: a model that reads MediaPipe's 3D but regresses the pose from a mean pose must relearn MediaPipe's accuracy
from the render set, whose gap to real video it then inherits; one that starts from MediaPipe's own 3D, put onto
the body, and learns a residual starts at MediaPipe's accuracy (the paper's "with refinement" setting, MediaPipe in
HybrIK's place).

The rotations are global first (camera axes, as the mesh head's root), then made local to Anny's 'local-ref'
chain (G_k = G_parent R_k, `base.chain_kinematics`), so every limb segment points exactly along its target:
- root: the frame of the hip line (left - right) and the trunk (pelvis -> mid-shoulders), rest to target;
- spine04..spine01: the upper trunk's frame (shoulder line, trunk) relative to spine05, spread evenly over the
  four bones; spine05 swung once so that the rest shoulders' midpoint lands on the trunk's direction;
- clavicles: swung so that each shoulder lands on its joint's direction; feet and wrists stay at rest (no joint
  observes them);
- each upper/lower limb pair: the segment's direction and its bend plane, whose normal is cross(upper, lower);
  where the limb is nearly straight or bent backwards that normal is unreliable and the parent's rest normal,
  carried along, takes over smoothly (weight `STRAIGHT_WEIGHT` against the bend's sine);
- neck01..head: the head's frame (mid-shoulders -> mid-ears up, ears -> nose forward) spread over the four bones.
Only bone directions are used, so the body's own bone lengths (its shape) are kept.
"""

import torch
from torch import Tensor, nn

from ..rotations import rotmat_to_rot6d, rotmat_to_rotvec, rotvec_to_rotmat

# Human3.6M-17 indices (base.H36M_JOINT_NAMES).
PELVIS, R_HIP, L_HIP, NOSE, HEAD, L_SHOULDER, R_SHOULDER = 0, 1, 4, 9, 10, 11, 14
# (upper bone, lower bone, end bone, its Human3.6M joints: upper head, lower head, end)
LIMBS = (
    ("upperleg01.L", "lowerleg01.L", "foot.L", (4, 5, 6)),
    ("upperleg01.R", "lowerleg01.R", "foot.R", (1, 2, 3)),
    ("upperarm01.L", "lowerarm01.L", "wrist.L", (11, 12, 13)),
    ("upperarm01.R", "lowerarm01.R", "wrist.R", (14, 15, 16)),
)
SPINE = ("spine05", "spine04", "spine03", "spine02", "spine01")
NECK = ("neck01", "neck02", "neck03", "head")
HIPS = ("upperleg01.R", "upperleg01.L")          # right to left, as the target lines run
SHOULDERS = ("upperarm01.R", "upperarm01.L")
CLAVICLES = ("clavicle.L", "clavicle.R")
# Bend sines below about this make the bend plane unreliable; the parent's rest normal takes over.
STRAIGHT_WEIGHT = 0.15
# A frame whose hips are closer than this (metres) has no pose (the model's inputs are zeros there).
MIN_HIP_WIDTH = 1e-3
_EPS = 1e-8


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def frame(primary: Tensor, secondary: Tensor) -> Tensor:
    """Orthonormal frames (..., 3, 3) whose columns are primary, secondary made orthogonal to it, and their cross."""
    a = _unit(primary)
    b = _unit(secondary - (secondary * a).sum(-1, keepdim=True) * a)
    return torch.stack([a, b, torch.linalg.cross(a, b)], -1)


def swing(a: Tensor, b: Tensor) -> Tensor:
    """The smallest rotations (..., 3, 3) that turn directions a onto directions b (..., 3)."""
    a, b = _unit(a), _unit(b)
    v, c = torch.linalg.cross(a, b), (a * b).sum(-1)[..., None, None]
    zero = torch.zeros_like(v[..., 0])
    skew = torch.stack([zero, -v[..., 2], v[..., 1], v[..., 2], zero, -v[..., 0], -v[..., 1], v[..., 0], zero], -1)
    skew = skew.view(*v.shape[:-1], 3, 3)
    return torch.eye(3, device=a.device) + skew + skew @ skew / (1 + c).clamp_min(_EPS)


def _power(R: Tensor, t: float) -> Tensor:
    """R^t on the shortest geodesic (t in [0, 1])."""
    return rotvec_to_rotmat(rotmat_to_rotvec(R) * t)


class LandmarkIK(nn.Module):
    """3D joints (N, 17, 3), root-relative, metres, camera axes -> local bone rotations (N, K, 3, 3) of the skeleton
    given (Anny's 24 posed bones: names, parents, rest heads of one shape) and a mask (N,) of frames with a pose.
    Frames without one get identity rotations; the caller puts its mean pose there."""

    def __init__(self, names: tuple[str, ...], parents: tuple[int, ...], rest_heads: Tensor):
        super().__init__()
        needed = {*SPINE, *NECK, *HIPS, *SHOULDERS, *CLAVICLES, *(b for limb in LIMBS for b in limb[:3])}
        missing = sorted(needed - set(names))
        if missing:
            raise ValueError(f"the landmark IK needs Anny's posed bones; this skeleton lacks {missing}")
        self.names, self.parents = tuple(names), tuple(parents)
        self.index = {n: i for i, n in enumerate(names)}
        self.register_buffer("rest_heads", rest_heads.detach().clone().float())     # (K, 3)
        h = self.rest_heads
        mid_shoulders = self._rest_mid(SHOULDERS)
        self.register_buffer("rest_root", frame(self._rest_dir(*HIPS), mid_shoulders))
        self.register_buffer("rest_upper", frame(self._rest_dir(*SHOULDERS), mid_shoulders))
        head = h[self.index["head"]]
        self.register_buffer("rest_head", frame(head - mid_shoulders, h.new_tensor([0.0, -1.0, 0.0])))
        normals = [torch.linalg.cross(self._rest_dir(u, lo), self._rest_dir(lo, e)) for u, lo, e, _ in LIMBS]
        self.register_buffer("rest_normals", _unit(torch.stack(normals)))          # (4, 3), bend plane at rest

    def _rest_dir(self, start: str, end: str) -> Tensor:
        return self.rest_heads[self.index[end]] - self.rest_heads[self.index[start]]

    def _rest_mid(self, pair: tuple[str, str]) -> Tensor:
        return (self.rest_heads[self.index[pair[0]]] + self.rest_heads[self.index[pair[1]]]) / 2

    def forward(self, joints: Tensor) -> tuple[Tensor, Tensor]:
        joints = joints.float()
        N = joints.shape[0]
        valid = (joints[:, L_HIP] - joints[:, R_HIP]).norm(dim=-1) > MIN_HIP_WIDTH
        mid_shoulders = (joints[:, L_SHOULDER] + joints[:, R_SHOULDER]) / 2
        trunk = mid_shoulders - joints[:, PELVIS]
        local = torch.eye(3, device=joints.device).repeat(N, len(self.names), 1, 1)
        G = {"root": frame(joints[:, L_HIP] - joints[:, R_HIP], trunk) @ self.rest_root.mT}
        local[:, 0] = G["root"]
        upper = frame(joints[:, L_SHOULDER] - joints[:, R_SHOULDER], trunk) @ self.rest_upper.mT
        self._spine(local, G, upper, trunk)
        head = frame(joints[:, HEAD] - mid_shoulders, joints[:, NOSE] - joints[:, HEAD]) @ self.rest_head.mT
        self._spread(local, G, NECK, G[SPINE[-1]], head)
        heads = self._heads(G, N)
        for clavicle, shoulder, joint in zip(CLAVICLES, SHOULDERS[::-1], (L_SHOULDER, R_SHOULDER)):
            k = self.index[clavicle]
            parent = G[self.names[self.parents[k]]]
            rest = parent @ self._rest_dir(clavicle, shoulder)
            G[clavicle] = swing(rest, joints[:, joint] - joints[:, PELVIS] - heads[clavicle]) @ parent
            local[:, k] = parent.mT @ G[clavicle]
        for (u, lo, end, (a, b, c)), rest_n in zip(LIMBS, self.rest_normals):
            parent = G[self.names[self.parents[self.index[u]]]]
            G[u], G[lo] = self._limb(joints[:, b] - joints[:, a], joints[:, c] - joints[:, b], parent, u, lo, end, rest_n)
            local[:, self.index[u]] = parent.mT @ G[u]
            local[:, self.index[lo]] = G[u].mT @ G[lo]
        identity = torch.eye(3, device=joints.device)
        return torch.where(valid[:, None, None, None], local, identity), valid

    @torch.no_grad()
    def initial_pose6d(self, joints: Tensor, fallback6d: Tensor) -> Tensor:
        """Clips of world joints (B, f, 17, 3) -> initial 6D poses (B, f, K*6), `fallback6d` (K*6,) (the mean pose)
        in frames without a pose."""
        B, f, J = joints.shape[:3]
        local, valid = self(joints.reshape(B * f, J, 3))
        pose6d = torch.where(valid[:, None], rotmat_to_rot6d(local).flatten(1), fallback6d)
        return pose6d.view(B, f, -1)

    def _spine(self, local: Tensor, G: dict, upper: Tensor, trunk: Tensor) -> None:
        """The spine bones: the upper trunk's rotation `upper` spread over spine04..spine01 with spine05 at rest,
        then spine05 swung once so that the mid-shoulders of the rest clavicles land on the trunk's direction."""
        root = G["root"]
        self._place_spine(local, G, root, upper)
        heads = self._heads(G, len(trunk))
        reached = (heads[SHOULDERS[0]] + heads[SHOULDERS[1]]) / 2
        self._place_spine(local, G, swing(reached, trunk) @ root, upper)

    def _place_spine(self, local: Tensor, G: dict, base: Tensor, upper: Tensor) -> None:
        """spine05's global rotation `base`, `upper` spread over spine04..spine01, clavicles at rest."""
        G[SPINE[0]] = base
        local[:, self.index[SPINE[0]]] = G["root"].mT @ base
        self._spread(local, G, SPINE[1:], base, upper)
        for clavicle in CLAVICLES:
            G[clavicle] = G[SPINE[-1]]

    def _heads(self, G: dict, N: int) -> dict:
        """Posed heads (N, 3), root at the origin, of the bones whose parents' global rotations are known."""
        heads = {"root": self.rest_heads.new_zeros(N, 3)}
        for k, name in enumerate(self.names):
            p = self.parents[k]
            if p >= 0 and self.names[p] in G and self.names[p] in heads:
                offset = self.rest_heads[k] - self.rest_heads[p]
                heads[name] = heads[self.names[p]] + G[self.names[p]] @ offset
        return heads

    def _spread(self, local: Tensor, G: dict, chain: tuple[str, ...], start: Tensor, end: Tensor) -> None:
        """Turn the chain's bones evenly so that its last bone's global rotation goes from `start` to `end`."""
        step = _power(start.mT @ end, 1.0 / len(chain))
        current = start
        for name in chain:
            local[:, self.index[name]] = step
            current = current @ step
            G[name] = current

    def _limb(self, upper: Tensor, lower: Tensor, parent: Tensor, u: str, lo: str, end: str, rest_normal: Tensor
              ) -> tuple[Tensor, Tensor]:
        """Global rotations of a limb's two segments from their target vectors (N, 3) and the parent's (N, 3, 3)."""
        carried = parent @ rest_normal                                          # (N, 3): the normal if unbent
        bend = torch.linalg.cross(_unit(upper), _unit(lower))
        forward = (bend * carried).sum(-1, keepdim=True) > 0                    # bent the way the joint bends
        normal = torch.where(forward, bend, torch.zeros_like(bend)) + STRAIGHT_WEIGHT * carried
        rest_u, rest_l = self._rest_dir(u, lo), self._rest_dir(lo, end)
        g_upper = frame(upper, normal) @ frame(rest_u, rest_normal).mT
        g_lower = frame(lower, normal) @ frame(rest_l, rest_normal).mT
        return g_upper, g_lower
