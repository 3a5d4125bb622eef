"""Anny -> SMPL retargeting: per-frame Anny bone rotations and shapes -> SMPL pose (24 rotation matrices per frame)
and one SMPL betas vector for the whole video, such that SMPL's 24 joints land on the corresponding Anny points.

How (all joints-only kinematics, no skinning):
1. Targets: the Anny points of `SMPL_TO_ANNY` (bone heads, or means of two) in camera axes, root-relative, from
   Anny's joints-only kinematics (as `posed_kinematics`) on the rest heads of each distinct shape; unposed bones such
   as toes and fingers ride rigidly on their posed ancestor.
2. Shape and rest alignment, once per video: betas and one SMPL pose that put SMPL's joints on the Anny points of
   the video's mean shape in Anny's reference pose (least squares on joint positions, a prior on betas). Its global
   rotations G0 (SMPL canonical axes -> Anny canonical axes) absorb the different rest poses (SMPL: T pose, Y up,
   facing +Z; Anny: A pose, Z up, facing -Y).
3. Per frame: start each SMPL joint's global rotation at G_anny(source bones) @ G0, so SMPL bones follow the Anny
   bones that carry the same body part, twists included; then refine all frames at once (batched Levenberg-Marquardt
   on a residual axis-angle per joint, analytic Jacobian) on the squared distance of the joints to the targets + a
   prior pulling each joint toward its start (keeps the twists that positions do not see) + a small temporal
   smoothness term.

SMPL's pelvis joint has no Anny counterpart (Anny's root sits at hip level, SMPL's pelvis some cm above the hip
joints), so the fit is translation-free: both point sets are compared about their centroids, and `pelvis_offset`
says where SMPL's pelvis (its origin) sits relative to Anny's root.

Limits: SMPL has 3 spine and 1 neck joint where Anny has 5 and 3, so strongly bent Anny spines leave up to ~2 cm at the
hips and spine1; one betas vector cannot follow shapes that change between clips (the error grows with the
spread of the per-clip shapes).
"""

from dataclasses import dataclass

import roma
import torch
from torch import Tensor

from .anny_body import ANNY_POSED_BONES, AnnyBody
from .smpl import SMPL_BONE_NAMES, SMPLBody

# SMPL joint -> the Anny bone heads whose mean is its target (rest positions checked against Anny's reference pose:
# spine joints at matching fractions of the hip -> neck height, the collar half way between the sternoclavicular
# joint and the shoulder, the foot joint at the ball of the foot, the hand joint at the middle finger's knuckle).
# SMPL's pelvis is left free (see the module docstring).
SMPL_TO_ANNY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("left_hip", ("upperleg01.L",)), ("right_hip", ("upperleg01.R",)),
    ("spine1", ("spine03", "spine02")),
    ("left_knee", ("lowerleg01.L",)), ("right_knee", ("lowerleg01.R",)),
    ("spine2", ("spine02", "spine01")),
    ("left_ankle", ("foot.L",)), ("right_ankle", ("foot.R",)),
    ("spine3", ("spine01",)),
    ("left_foot", ("toe1-1.L", "toe5-1.L")), ("right_foot", ("toe1-1.R", "toe5-1.R")),
    ("neck", ("neck01",)),
    ("left_collar", ("clavicle.L", "shoulder01.L")), ("right_collar", ("clavicle.R", "shoulder01.R")),
    ("head", ("head",)),
    ("left_shoulder", ("upperarm01.L",)), ("right_shoulder", ("upperarm01.R",)),
    ("left_elbow", ("lowerarm01.L",)), ("right_elbow", ("lowerarm01.R",)),
    ("left_wrist", ("wrist.L",)), ("right_wrist", ("wrist.R",)),
    ("left_hand", ("finger3-1.L",)), ("right_hand", ("finger3-1.R",)),
)
# SMPL joint -> the posed Anny bones whose (averaged) global rotation its own starts from: the bones that move the
# Anny points of the joint's children.
SMPL_ROTATION_SOURCE: dict[str, tuple[str, ...]] = {
    "pelvis": ("root",), "spine1": ("spine03", "spine02"), "spine2": ("spine02",), "spine3": ("spine01",),
    "neck": ("neck01", "neck02", "neck03"), "head": ("head",),
    **{f"{side}_{j}": (f"{bone}.{s}",) for side, s in (("left", "L"), ("right", "R")) for j, bone in (
        ("hip", "upperleg01"), ("knee", "lowerleg01"), ("ankle", "foot"), ("foot", "foot"), ("collar", "clavicle"),
        ("shoulder", "upperarm01"), ("elbow", "lowerarm01"), ("wrist", "wrist"), ("hand", "wrist"))},
}
# SMPL canonical axes (Y up, facing +Z) -> Anny canonical axes (Z up, facing -Y); +X is the body's left in both.
SMPL_TO_ANNY_AXES = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))

_CM = 100.0        # losses in cm^2, so the weights below read as "cm^2 per unit"


@dataclass
class Retargeted:
    """SMPL motion of a video.

    rotmats: (T, 24, 3, 3) SMPL local rotations, root in camera axes (x right, y down, z forward), as the Anny output;
    betas: (10,) one SMPL shape for the whole video;
    joint_error_mm: mean distance (mm) between SMPL's joints and their Anny points after the fit (about the centroid);
    pelvis_offset: (T, 3) SMPL's pelvis (the origin of `SMPLBody` outputs) relative to Anny's root bone head, camera
        axes, metres: Anny-root-relative SMPL joints/vertices are `smpl(rotmats, betas.expand(T, -1))` + this;
    frame_error_mm: (T,) the per-frame mean distances.
    """

    rotmats: Tensor
    betas: Tensor
    joint_error_mm: float
    pelvis_offset: Tensor
    frame_error_mm: Tensor


class _TreeFK:
    """Joints-only forward kinematics of a kinematic tree with `chain_kinematics`' convention (rotations act in
    world-aligned axes at rest), the root joint at the origin."""

    def __init__(self, parents: list[int]):
        if parents[0] != -1 or any(not 0 <= p < k for k, p in enumerate(parents) if k > 0):
            raise ValueError("kinematic tree: the root must come first and each parent before its children")
        self.parents = parents
        self.parent_index = torch.tensor([max(p, 0) for p in parents])

    def __call__(self, rotmats: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
        """rotmats (B, K, 3, 3) local rotations, rest (B or 1, K, 3) rest joints -> globals (B, K, 3, 3), joints
        (B, K, 3) with the root joint at the origin."""
        offsets = (rest - rest[:, self.parent_index])[..., None]
        rots, heads = [rotmats[:, 0]], [rotmats.new_zeros(rotmats.shape[0], 3)]
        for k in range(1, len(self.parents)):
            p = self.parents[k]
            heads.append(heads[p] + (rots[p] @ offsets[:, k])[..., 0])
            rots.append(rots[p] @ rotmats[:, k])
        return torch.stack(rots, 1), torch.stack(heads, 1)


def _mean_rotation(rots: list[Tensor]) -> Tensor:
    """Chordal mean of a few rotations (..., 3, 3)."""
    return rots[0] if len(rots) == 1 else roma.special_procrustes(torch.stack(rots).sum(0))


class _Problem:
    """Index tables shared by the steps: Anny points, SMPL joints, rotation sources."""

    def __init__(self, anny: AnnyBody, smpl: SMPLBody):
        labels = anny.bone_labels
        smpl_names = list(SMPL_BONE_NAMES)
        self.matched = torch.tensor([smpl_names.index(name) for name, _ in SMPL_TO_ANNY])
        # Every Anny label used as a point: its index among the 104 bones, its anchor among the posed bones.
        point_labels = sorted({lab for _, labs in SMPL_TO_ANNY for lab in labs})
        self.point_all = torch.tensor([labels.index(lab) for lab in point_labels])
        self.point_anchor = torch.tensor([anny.anchor(lab) for lab in point_labels])
        self.mix = torch.zeros(len(SMPL_TO_ANNY), len(point_labels))
        for i, (_, labs) in enumerate(SMPL_TO_ANNY):
            for lab in labs:
                self.mix[i, point_labels.index(lab)] = 1.0 / len(labs)
        self.anny_posed_index = anny.posed_index.detach().cpu()
        self.anny_fk = _TreeFK(list(anny.posed_parents))
        self.sources = [[ANNY_POSED_BONES.index(b) for b in SMPL_ROTATION_SOURCE[name]] for name in SMPL_BONE_NAMES]
        parents = [int(p) for p in smpl.parents.tolist()]
        self.fk = _TreeFK(parents)
        # SMPL rest joints are linear in the betas: J(b) = J_template + J_dirs b.
        reg = smpl.J_regressor.detach().to("cpu", torch.float32)
        self.J_template = reg @ smpl.v_template.detach().to("cpu", torch.float32)                     # (24, 3)
        self.J_dirs = torch.einsum("jv,vcs->jcs", reg, smpl.shapedirs.detach().to("cpu", torch.float32))  # (24, 3, S)
        ancestors = torch.eye(len(parents))                          # [k, j] = 1 where j is k or one of its ancestors
        for k, p in enumerate(parents):
            if p >= 0:
                ancestors[k] += ancestors[p]
        self.matched_ancestors = ancestors[self.matched]                                            # (23, 24)
        self.A = torch.tensor(SMPL_TO_ANNY_AXES)

    def smpl_rest(self, betas: Tensor) -> Tensor:
        """Betas (S,) -> SMPL rest joints (1, 24, 3)."""
        return (self.J_template + self.J_dirs @ betas)[None]

    def anny_points(self, rotmats: Tensor, rest_heads: Tensor) -> tuple[Tensor, Tensor]:
        """Anny rotations (B, 24, 3, 3) and rest heads (B or 1, 104, 3) -> global rotations (B, 24, 3, 3) and the
        targets (B, 23, 3) of the SMPL joints in `self.matched`, root-relative, axes of the root rotation."""
        G, heads = self.anny_fk(rotmats, rest_heads[:, self.anny_posed_index])   # Anny's root head is the origin
        rest = rest_heads.expand(rotmats.shape[0], -1, -1)
        a = self.point_anchor
        # A posed bone is its own anchor (zero offset); unposed ones (toes, fingers) ride rigidly on their anchor.
        offsets = rest[:, self.point_all] - rest[:, self.anny_posed_index[a]]
        points = heads[:, a] + (G[:, a] @ offsets[..., None])[..., 0]
        return G, self.mix @ points


def _centered(x: Tensor) -> Tensor:
    return x - x.mean(-2, keepdim=True)


def _skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(*v.shape, 3)


def _neighbour_sum(x: Tensor) -> Tensor:
    """Each frame's previous plus next frame (one neighbour at the ends)."""
    total = torch.zeros_like(x)
    total[1:] += x[:-1]
    total[:-1] += x[1:]
    return total


def _joint_jacobian(problem: _Problem, G: Tensor, P: Tensor, shape_dirs: Tensor | None) -> Tensor:
    """d (centred matched joints, cm) / d (per-bone right perturbations [, betas]): (B, 23 * 3, 24 * 3 [+ S]).
    A perturbation d of joint j's rotation moves each descendant k by -[p_k - p_j]x G_j d; with `shape_dirs`
    (24, 3, S), d joint_k / d betas is the sum over the path root -> k of G_parent(i) (D_i - D_parent(i))."""
    B, K = G.shape[:2]
    ancestors = problem.matched_ancestors
    Pc = P * _CM
    jac = -_skew(Pc[:, problem.matched, None] - Pc[:, None]) @ G[:, None]              # (B, 23, 24, 3, 3)
    jac = (jac * ancestors[None, :, :, None, None]).permute(0, 1, 3, 2, 4).reshape(B, -1, 3, K * 3)
    if shape_dirs is not None:
        moved = G[0, problem.fk.parent_index] @ shape_dirs                              # (24, 3, S)
        jac = torch.cat([jac, torch.einsum("kj,jcs->kcs", ancestors, moved)[None] * _CM], -1)
    return (jac - jac.mean(1, keepdim=True)).reshape(B, -1, jac.shape[-1])              # centring is linear


def _levenberg_marquardt(problem: _Problem, start: Tensor, targets: Tensor, betas: Tensor, iterations: int,
                         pose_prior: float, smooth: float = 0.0, shape_prior: float | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Batched Levenberg-Marquardt on residual axis-angles, R_j = start_j exp(delta_j), minimising per frame
    |centred SMPL joints - centred targets|^2 (cm^2) + pose_prior |delta|^2 + smooth sum_neighbours |delta - delta_n|^2,
    and, when shape_prior is given (one frame only), also over the betas with + shape_prior |betas|^2.

    The Jacobian is analytic: a right perturbation d of joint j's rotation moves each descendant k by
    -[p_k - p_j]x G_j d, and the betas move the joints through the rest offsets. The smoothness term holds the
    neighbours at their current values in each step (a Jacobi sweep); each frame keeps its own damping and only takes
    steps that lower its cost.

    Args:
        start: (B, 24, 3, 3) local rotations; targets: (B, 23, 3) metres; betas: (S,), the start when fitted.
    Returns:
        rotations (B, 24, 3, 3), betas (S,), joints (B, 24, 3) metres (root at the origin).
    """
    B, K = start.shape[:2]
    fit_shape = shape_prior is not None
    S = betas.shape[0] if fit_shape else 0
    n = K * 3 + S
    goal = _centered(targets) * _CM
    matched = problem.matched
    smooth = smooth if B > 1 else 0.0
    num_neighbours = torch.full((B, 1, 1), 2.0)
    num_neighbours[[0, -1]] = 1.0
    dirs = None
    if fit_shape:
        dirs = problem.J_dirs - problem.J_dirs[problem.fk.parent_index]                 # (24, 3, S) rest offsets
        dirs[0] = 0.0                                                                   # the root stays at the origin

    def evaluate(delta: Tensor, betas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        G, P = problem.fk(start @ roma.rotvec_to_rotmat(delta), problem.smpl_rest(betas))
        return G, P, _centered(P[:, matched]) * _CM - goal

    def cost(delta: Tensor, betas: Tensor, residual: Tensor, nb: Tensor, nb_sq: Tensor) -> Tensor:
        c = (residual ** 2).sum((1, 2)) + pose_prior * (delta ** 2).sum((1, 2))
        if smooth:
            c = c + smooth * (num_neighbours[:, 0, 0] * (delta ** 2).sum((1, 2)) - 2 * (delta * nb).sum((1, 2)) + nb_sq)
        if fit_shape:
            c = c + shape_prior * (betas ** 2).sum()
        return c

    delta = start.new_zeros(B, K, 3)
    damping = start.new_full((B,), 1.0)
    G, P, residual = evaluate(delta, betas)
    diag = torch.cat([torch.full((K * 3,), float(pose_prior)), torch.full((S,), float(shape_prior or 0.0))])
    for _ in range(iterations):
        nb = _neighbour_sum(delta) if smooth else delta
        nb_sq = _neighbour_sum(delta ** 2).sum((1, 2)) if smooth else None
        current = cost(delta, betas, residual, nb, nb_sq)
        jac = _joint_jacobian(problem, G, P, dirs)
        grad = (jac.transpose(1, 2) @ residual.reshape(B, -1, 1))[..., 0]
        grad[:, :K * 3] += pose_prior * delta.reshape(B, -1)
        hess_diag = diag.expand(B, n) + damping[:, None]
        if smooth:
            grad[:, :K * 3] += smooth * (num_neighbours * delta - nb).reshape(B, -1)
            hess_diag = hess_diag + torch.cat([smooth * num_neighbours[:, 0].expand(B, K * 3),
                                               hess_diag.new_zeros(B, S)], 1)
        if fit_shape:
            grad[:, K * 3:] += shape_prior * betas
        hess = jac.transpose(1, 2) @ jac + torch.diag_embed(hess_diag)
        step = -torch.linalg.solve(hess, grad[..., None])[..., 0]                       # (B, n)
        trial_delta = delta + step[:, :K * 3].reshape(B, K, 3)
        trial_betas = betas + step[0, K * 3:] if fit_shape else betas
        tG, tP, tres = evaluate(trial_delta, trial_betas)
        better = cost(trial_delta, trial_betas, tres, nb, nb_sq) < current
        damping = torch.where(better, damping * 0.3, damping * 5.0).clamp(1e-6, 1e8)
        delta = torch.where(better[:, None, None], trial_delta, delta)
        if fit_shape and bool(better[0]):
            betas = trial_betas
        G = torch.where(better[:, None, None, None], tG, G)
        P = torch.where(better[:, None, None], tP, P)
        residual = torch.where(better[:, None, None], tres, residual)
    return start @ roma.rotvec_to_rotmat(delta), betas, P


def _fit_rest(problem: _Problem, targets: Tensor, iterations: int, shape_prior: float) -> tuple[Tensor, Tensor, Tensor]:
    """Betas and the SMPL pose whose joints best match the Anny reference-pose points `targets` (1, 23, 3), Anny
    canonical axes -> betas (S,), global rotations G0 (24, 3, 3) (SMPL canonical -> Anny canonical axes), joints
    (24, 3)."""
    start = torch.eye(3).repeat(1, 24, 1, 1)
    start[0, 0] = problem.A
    pose, betas, _ = _levenberg_marquardt(problem, start, targets, torch.zeros(problem.J_dirs.shape[-1]), iterations,
                                          pose_prior=0.1, shape_prior=shape_prior)
    G0, joints = problem.fk(pose, problem.smpl_rest(betas))
    return betas, G0[0], joints[0]


def _initial_pose(problem: _Problem, anny_globals: Tensor, G0: Tensor) -> Tensor:
    """Anny global rotations (B, 24, 3, 3) -> SMPL local rotations (B, 24, 3, 3): each SMPL joint's global rotation is
    its source bones' (averaged) global rotation after the rest alignment G0."""
    G = torch.stack([_mean_rotation([anny_globals[:, s] for s in src]) for src in problem.sources], 1) @ G0
    parent = G[:, problem.fk.parent_index].clone()
    parent[:, 0] = torch.eye(3)
    return parent.transpose(-1, -2) @ G


@torch.no_grad()
def rest_fit_table(anny: AnnyBody, smpl: SMPLBody, shape: Tensor | None = None, rest_iterations: int = 30,
                   shape_prior: float = 0.5) -> list[tuple[str, tuple[str, ...], tuple[float, float, float], float]]:
    """How well SMPL's skeleton fits Anny's in the reference pose after the shape fit, to check `SMPL_TO_ANNY` on a
    real SMPL file: one row per matched SMPL joint: (name, Anny labels, Anny point in mm (root-relative, Anny axes:
    z up, facing -y, +x the body's left), distance in mm from the fitted SMPL joint, both about their centroids)."""
    shape = anny.mean_shape.cpu()[None] if shape is None else shape.detach().cpu().float().reshape(1, -1)
    problem = _Problem(anny, smpl)
    heads = anny.rest_model(shape.to(anny.mean_shape.device), with_vertices=False)["heads"].to("cpu", torch.float32)
    _, reference = problem.anny_points(torch.eye(3).expand(1, anny.num_bones, 3, 3), heads)
    _, _, joints = _fit_rest(problem, reference, rest_iterations, shape_prior)
    dist = (_centered(joints[problem.matched]) - _centered(reference[0])).norm(dim=-1) * 1000
    return [(name, labels, tuple(round(float(c) * 1000, 1) for c in point), round(float(d), 1))
            for (name, labels), point, d in zip(SMPL_TO_ANNY, reference[0], dist)]


def _check(anny: AnnyBody, rotmats: Tensor, shapes: Tensor, smpl: SMPLBody, valid: Tensor | None, iterations: int,
           rest_iterations: int, chunk: int) -> None:
    if rotmats.ndim != 4 or rotmats.shape[1:] != (anny.num_bones, 3, 3):
        raise ValueError(f"retarget: Anny rotations must have shape (T, {anny.num_bones}, 3, 3), "
                         f"got {tuple(rotmats.shape)}")
    if shapes.ndim != 2 or shapes.shape[1] != anny.num_shape:
        raise ValueError(f"retarget: Anny shapes must have shape (T, {anny.num_shape}), got {tuple(shapes.shape)}")
    if shapes.shape[0] != rotmats.shape[0]:
        raise ValueError(f"retarget: {rotmats.shape[0]} frames of rotations but {shapes.shape[0]} of shapes")
    if rotmats.shape[0] == 0:
        raise ValueError("retarget: no frames to retarget")
    if not (torch.isfinite(rotmats).all() and torch.isfinite(shapes).all()):
        raise ValueError("retarget: rotations or shapes contain NaN/inf; pass identity/zeros in frames without a body")
    if valid is not None and (valid.shape != (rotmats.shape[0],) or not bool(valid.any())):
        raise ValueError(f"retarget: valid must be a (T,) mask with at least one frame, got {tuple(valid.shape)}")
    if iterations < 0 or rest_iterations < 0 or chunk < 1:
        raise ValueError(f"retarget: iterations ({iterations}), rest_iterations ({rest_iterations}) must be >= 0 "
                         f"and chunk ({chunk}) >= 1")
    if smpl.num_bones != 24 or tuple(smpl.parents.shape) != (24,):
        raise ValueError("retarget: the target must be a 24-joint SMPL body")


def retarget_anny_to_smpl(anny: AnnyBody, rotmats: Tensor, shapes: Tensor, smpl: SMPLBody, iterations: int = 8,
                          valid: Tensor | None = None, chunk: int = 512, pose_prior: float = 1.0,
                          smooth: float = 1.0, shape_prior: float = 0.5, rest_iterations: int = 30,
                          num_threads: int | None = 1) -> Retargeted:
    """Convert an Anny motion to SMPL (see the module docstring). No autograd: safe under `torch.inference_mode`.

    Args:
        anny: the Anny body the rotations belong to; rotmats: (T, 24, 3, 3) Anny 'local-ref' rotations, root in
            camera axes; shapes: (T, 6) Anny shape logits (frames of a clip usually share one); smpl: the SMPL body;
        iterations: Levenberg-Marquardt steps of the per-frame fit (0: the kinematic start only);
        valid: optional (T,) bool mask of the frames whose shapes make the video's mean shape (default: all);
        chunk: frames solved at once; pose_prior, smooth, shape_prior: weights in cm^2 per rad^2 (pose), per rad^2
            between neighbouring frames (smooth), per unit beta^2 (shape);
        rest_iterations: steps of the shape and rest-pose fit;
        num_threads: torch CPU threads while it runs (restored after; None leaves them): the work is many small
            batched 3x3 products, which one thread does fastest (two were 2-10x slower on a busy 2-core machine).
    Returns:
        `Retargeted` (CPU float32 tensors).
    Raises:
        ValueError: inputs of the wrong shape or with NaNs, one line.
    """
    _check(anny, rotmats, shapes, smpl, valid, iterations, rest_iterations, chunk)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _retarget(anny, rotmats, shapes, smpl, iterations, valid, chunk, pose_prior, smooth, shape_prior,
                         rest_iterations)
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _retarget(anny: AnnyBody, rotmats: Tensor, shapes: Tensor, smpl: SMPLBody, iterations: int,
              valid: Tensor | None, chunk: int, pose_prior: float, smooth: float, shape_prior: float,
              rest_iterations: int) -> Retargeted:
    rotmats = rotmats.detach().to("cpu", torch.float32)
    shapes = shapes.detach().to("cpu", torch.float32)
    problem = _Problem(anny, smpl)
    T = rotmats.shape[0]
    unique, inverse = torch.unique(shapes, dim=0, return_inverse=True)
    mean_shape = shapes[valid.cpu().bool() if valid is not None else slice(None)].mean(0, keepdim=True)
    rest_heads = anny.rest_model(torch.cat([unique, mean_shape]).to(anny.mean_shape.device), with_vertices=False)
    rest_heads = rest_heads["heads"].to("cpu", torch.float32)
    _, reference = problem.anny_points(torch.eye(3).expand(1, anny.num_bones, 3, 3), rest_heads[-1:])
    betas, G0, _ = _fit_rest(problem, reference, rest_iterations, shape_prior)
    out_rot, offsets, errors = [], [], []
    for i in range(0, T, chunk):
        sl = slice(i, min(i + chunk, T))
        anny_globals, targets = problem.anny_points(rotmats[sl], rest_heads[inverse[sl]])
        start = _initial_pose(problem, anny_globals, G0)
        pose, _, joints = _levenberg_marquardt(problem, start, targets, betas, iterations, pose_prior, smooth)
        joints = joints[:, problem.matched]
        offsets.append((targets - joints).mean(1))
        errors.append((_centered(joints) - _centered(targets)).norm(dim=-1).mean(1))
        out_rot.append(pose)
    frame_error = torch.cat(errors) * 1000
    return Retargeted(rotmats=torch.cat(out_rot), betas=betas, joint_error_mm=float(frame_error.mean()),
                      pelvis_offset=torch.cat(offsets), frame_error_mm=frame_error)
