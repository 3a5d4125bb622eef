"""A world frame for a static camera: z up along gravity, the ground at z = 0, from everyone's planted feet.

Gravity is the bodies' up: the median direction from the ankles to the head over everyone's frames, which must
lie within `MAX_TILT_DEG` of the camera's up (-y; people are filmed roughly upright). Where a foot stands still
in the image it is on the ground, so the ground's height along that up is the level of the lowest group of such
planted ankles that holds a tenth of them (people standing on a box form a group above it; `floor_level`),
lowered by the ankle's height above the sole (the body's own, at each person's shape). The world frame: z along
gravity's up, x the camera's x axis laid on the ground, origin the point of the ground under the camera;
`world_from_camera` maps camera points to it, so the camera's height is its z.

Without enough planted-foot evidence (fewer than `MIN_CONTACTS` planted ankles, or no level that holds a tenth of
them and at least 10) there is no world frame and the outputs stay in the camera frame. The camera must not move:
a moving camera's planted feet do not stay still in the image, so there is usually no evidence, and any found is
wrong.
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import spsolve

from .body.base import BodyModel, joints_per_shape
from .video.presence import runs_of

ANKLES = (3, 6)                 # Human3.6M right and left ankle
LEGS = (("upperleg01.R", "lowerleg01.R", "foot.R"), ("upperleg01.L", "lowerleg01.L", "foot.L"))  # Anny, as ANKLES
LOCK_RAMP = 3                   # frames over which a foot eases into and out of its lock
HEAD = 10
CONTACT_SPEED = 0.15            # person heights per second in the image: an ankle slower than this is planted
# Planted ankles within this height of each other stand on one level: the monocular depth jitters by tens of cm
# and the camera is tilted, so their heights along gravity scatter by +-10 cm on the demo; a box is a metre or two.
LEVEL_M = 0.15
MIN_CONTACTS = 20
MIN_FLOOR_SHARE = 0.1
MIN_FLOOR_POINTS = 10
MAX_TILT_DEG = 45.0
# `refine_up`'s weights: how far a planted spot (the median of one planted run) scatters about the ground, and how
# far the bodies' up typically is from gravity (walking people lean forward by a few degrees).
SPOT_SCATTER_M = 0.05
UP_PRIOR_DEG = 5.0
# Off until confirmed on the test split's renders: on the validation subjects' (`diffmesh eval --feet --split val`,
# docs/people.md) it halves gravity's error (4.8 -> 2.4 degrees) and the true-floor penetration, for 2 mm/frame
# more skating; where bodies stand exactly upright (tests/test_world.py) it adds the spots' noise.
REFINE_UP = False


@dataclass
class World:
    """The ground and the world frame, in the camera's metres."""

    up: np.ndarray                  # (3,) unit normal of the ground, camera frame
    offset: float                   # the ground: up . x + offset = 0
    world_from_camera: np.ndarray   # (4, 4)
    contacts: int                   # candidate planted ankles
    inliers: int                    # of them, on the floor's level (`floor_level`)
    residual_m: float               # their median distance to that level along gravity

    @property
    def camera_height_m(self) -> float:
        return float(self.offset)

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) in the world frame (NaN stays NaN)."""
        return points @ self.world_from_camera[:3, :3].T + self.world_from_camera[:3, 3]

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) in the camera frame (the inverse of `to_world`)."""
        return (points - self.world_from_camera[:3, 3]) @ self.world_from_camera[:3, :3]

    def vectors_in_camera(self, vectors: np.ndarray) -> np.ndarray:
        """World displacements (..., 3) in camera axes (the rotation only, inverted)."""
        return vectors @ self.world_from_camera[:3, :3]


def ankle_height(body: BodyModel, shape: np.ndarray) -> float:
    """Height (m) of the ankle joints above the sole in the body's upright rest pose, for one shape (S,)."""
    s = body.mean_shape.new_tensor(np.asarray(shape, np.float32))
    bind = body.bind_pose(s)
    up = np.asarray(bind.upright, np.float64)[1]                 # the upright frame's Y axis
    rest = torch.eye(3).expand(1, 1, body.num_bones, 3, 3).contiguous()
    joints = body.clip_joints(rest, s[None])[0, 0].numpy().astype(np.float64)
    sole = (np.asarray(bind.vertices, np.float64) @ up).min()
    return float(np.mean(joints[list(ANKLES)] @ up) - sole)


def planted(keypoints2d: np.ndarray, valid: np.ndarray, fps: float, span: int = 2) -> np.ndarray:
    """(T, 2) bool: where each ankle stands still in the image: its 2D displacement over +-`span` frames, per
    second and per person height (px), under CONTACT_SPEED. From the 2D keypoints, not the 3D joints: the
    camera-frame depth of a monocular body jitters by tens of cm/s where the foot in the image does not move."""
    ankles = keypoints2d[:, list(ANKLES), :2].astype(np.float64)
    heights = np.ptp(keypoints2d[valid][..., 1], axis=1) if valid.any() else np.ones(1)
    height = max(float(np.median(heights)), 1.0)
    speed = np.full(ankles.shape[:2], np.inf)
    speed[span:-span] = np.linalg.norm(ankles[2 * span:] - ankles[:-2 * span], axis=-1) * fps / (2 * span) / height
    around = np.zeros(len(valid), bool)
    around[span:-span] = np.all([valid[k:len(valid) - 2 * span + k] for k in range(2 * span + 1)], axis=0)
    sure = keypoints2d[:, list(ANKLES), 2] >= 0.5
    return around[:, None] & sure & (speed < CONTACT_SPEED)


def body_up(people: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]) -> np.ndarray | None:
    """Gravity's up in the camera frame: the median direction from the ankles' midpoint to the head over every
    valid frame of everyone (people mostly stand upright), None when it is more than MAX_TILT_DEG from the
    camera's up (-y)."""
    dirs = [j[v, HEAD] - j[v][:, list(ANKLES)].mean(1) for j, _, v, _ in people]
    dirs = np.concatenate(dirs or [np.zeros((0, 3))]).astype(np.float64)
    dirs = dirs[np.isfinite(dirs).all(1) & (np.linalg.norm(dirs, axis=1) > 1e-6)]
    if not len(dirs):
        return None
    up = np.median(dirs / np.linalg.norm(dirs, axis=1, keepdims=True), 0)
    up /= np.linalg.norm(up)
    return up if -up[1] >= np.cos(np.radians(MAX_TILT_DEG)) else None


def planted_spots(joints: np.ndarray, planted_ankles: np.ndarray) -> np.ndarray:
    """(R, 3): where each run of planted frames of each ankle stood, the median of its camera-frame positions, so
    that a foot planted for a second counts once, not thirty times."""
    spots = []
    for side, ankle in enumerate(ANKLES):
        for start, stop in runs_of(planted_ankles[:, side]):
            points = joints[start:stop, ankle].astype(np.float64)
            points = points[np.isfinite(points).all(1)]
            if len(points):
                spots.append(np.median(points, 0))
    return np.array(spots, np.float64).reshape(-1, 3)


def refine_up(spots: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Gravity's up from the planted spots on the floor (N, 3), with the bodies' up as prior: the unit normal n
    minimising sum(((p - mean) . n) / SPOT_SCATTER_M)^2 + (1 - (n . up)^2) / UP_PRIOR_DEG^2 (in radians). Where
    the spots spread over the floor they set its tilt; about the line of a single walk across the view, where
    they leave it free, the bodies' up does."""
    d = spots - spots.mean(0)
    cost = d.T @ d / SPOT_SCATTER_M ** 2 + (np.eye(3) - np.outer(up, up)) / np.radians(UP_PRIOR_DEG) ** 2
    normal = np.linalg.eigh(cost)[1][:, 0]                          # the eigenvector of the smallest eigenvalue
    return normal if normal @ up > 0 else -normal


def floor_level(heights: np.ndarray) -> np.ndarray:
    """The inliers (bool (N,)) of the floor among planted-ankle heights: the lowest group of heights within
    LEVEL_M of one of them that holds at least MIN_FLOOR_SHARE of all and MIN_FLOOR_POINTS, re-centred on its
    median. People on a box or a step form a group above it; a few ankles placed too low by a bad frame are too
    few to count. All False when there is none."""
    near = np.abs(heights[:, None] - heights[None, :]) < LEVEL_M
    counts = near.sum(1)
    enough = np.flatnonzero(counts >= max(MIN_FLOOR_SHARE * len(heights), MIN_FLOOR_POINTS))
    if not len(enough):
        return np.zeros(len(heights), bool)
    inliers = near[enough[np.argmin(heights[enough])]]
    for _ in range(3):                                  # re-centred on the group's median, not its lowest member
        inliers = np.abs(heights - np.median(heights[inliers])) < LEVEL_M
    return inliers


def world_frame(up: np.ndarray, offset: float) -> np.ndarray:
    """(4, 4) camera -> world: z = up, x = the camera's x axis on the ground, origin under the camera."""
    x = np.array([1.0, 0.0, 0.0]) - up[0] * up
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(up, x), up])
    origin = -offset * up                                          # the camera centre's foot on the ground
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, -R @ origin
    return M


def fit_ground(people: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], fps: float) -> World | None:
    """The world of a static camera from every person's (joints (T, 17, 3) camera frame, keypoints2d (T, 17, 3),
    valid (T,), ankle height above the sole in m); None without enough planted-foot evidence.

    The ground's normal is the bodies' up (`body_up`), not a plane fitted to the planted ankles: a person walking
    across the view plants their feet along a line, which leaves the plane's tilt about that line free. The
    ankles set its height (`floor_level`)."""
    up = body_up(people)
    masks = [planted(k, v, fps) for _, k, v, _ in people]
    candidates = [(j[:, list(ANKLES)][m].astype(np.float64), h) for (j, _, _, h), m in zip(people, masks)]
    points = np.concatenate([c for c, _ in candidates] or [np.zeros((0, 3))])
    points = points[np.isfinite(points).all(1)]
    if up is None or len(points) < MIN_CONTACTS:
        return None
    inliers = floor_level(points @ up)
    if not inliers.any():
        return None
    if REFINE_UP:
        spots = np.concatenate([planted_spots(j, m) for (j, _, _, _), m in zip(people, masks)])
        on_floor = np.abs(spots @ up - np.median((points @ up)[inliers])) < LEVEL_M
        up = refine_up(spots[on_floor], up) if on_floor.sum() >= 3 else up
        inliers = floor_level(points @ up)
        if not inliers.any():
            return None
    heights = points @ up
    level = float(np.median(heights[inliers]))
    residual = float(np.median(np.abs(heights[inliers] - level)))
    sole = float(np.average([h for _, h in candidates], weights=[max(len(c), 1) for c, _ in candidates]))
    offset = sole - level                                          # up . x + offset = 0 on the ground
    return World(up, offset, world_frame(up, offset), len(points), int(inliers.sum()), residual)


# The exports turn camera axes (y down, z forward) into glTF/BVH's Y-up axes by C, the 180-degree turn about x
# (export.py). Handing them C G (world motion), with G taking the z-up world to Y-up axes (x, z, -y), makes the
# files' Y the world's up, so the bodies stand on the ground plane (Blender's floor) in the GLB and the BVH.
_C = np.diag([1.0, -1.0, -1.0])
_G = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def for_exports(world: World, rotmats: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A motion's rotations (T, K, 3, 3) (root in camera axes) and root positions (T, 3) (camera frame), redone
    so that `export.write_glb`/`write_bvh` write it in the world frame (z up as the files' Y)."""
    M = _C @ _G @ world.world_from_camera[:3, :3]
    out = rotmats.copy()
    out[:, 0] = M @ rotmats[:, 0]
    moved = world.to_world(translation) @ (_C @ _G).T
    return out.astype(np.float32), moved.astype(np.float32)


def foot_skating_mm(joints_world: np.ndarray, planted_ankles: np.ndarray, fps: float) -> float:
    """Mean horizontal move (mm per frame at 30 fps) of an ankle between consecutive frames in which it is
    planted: how far feet slide on the ground (joints_world (T, 17, 3), planted_ankles (T, 2) bool)."""
    ankles = joints_world[:, list(ANKLES), :2].astype(np.float64)
    both = planted_ankles[1:] & planted_ankles[:-1]
    moves = np.linalg.norm(ankles[1:] - ankles[:-1], axis=-1)[both & np.isfinite(ankles[1:, :, 0])
                                                              & np.isfinite(ankles[:-1, :, 0])]
    return float(moves.mean() * 1000 * fps / 30.0) if len(moves) else float("nan")


def penetration_m(joints_world: np.ndarray, valid: np.ndarray, sole: float) -> np.ndarray:
    """(N,) how far below the ground the lower sole is in each valid frame (0 where above): the lower ankle's
    height minus the ankle's height above the sole."""
    lowest = np.nanmin(joints_world[valid][:, list(ANKLES), 2], axis=1) - sole
    return np.maximum(-lowest, 0.0)


# ---------------------------------------------------------------- feet that stay put

# A planted foot's run of frames stands on the floor when its ankles are within this of the floor's ankle level,
# else on a level of its own (a box, a step): the placed body's depth jitter moves planted ankles by tens of cm
# along the ray, while a step or box is higher than that.
SNAP_M = 0.3
MIN_RAY_DROP_M = 0.05           # an ankle less than this below the camera: its ray meets the floor too far away
MAX_DEPTH_FACTOR = 2.0          # the ray's point may be at most this much nearer or farther than the placed ankle
VELOCITY_WEIGHT = 0.01          # `smooth_shift`'s weights, per frame, against a planted ankle's squared miss
ACCELERATION_WEIGHT = 0.1       # higher: a smoother world root, feet that slide more (docs/people.md)


@dataclass
class Settled:
    """One person's world-frame motion after the contact handling (`settle_feet`)."""

    joints_world: np.ndarray        # (T, 17, 3) NaN where not valid
    shift: np.ndarray               # (T, 3) added to the placed body in the world (zeros where not valid)
    contacts: np.ndarray            # (T, 2) bool: right and left ankle planted
    anchors: np.ndarray | None = None    # (T, 2, 3) where each planted ankle is held in the world (NaN elsewhere)
    rotmats: np.ndarray | None = None    # (T, K, 3, 3) the pose with the legs locked (`lock_feet`), for the exports


def onto_level(world: World, points: np.ndarray, level: float) -> np.ndarray:
    """Points (N, 3) of the world moved along their camera rays to height `level`, which keeps where they are in
    the image; straight down (or up) where the ray meets that level too far away or behind the camera."""
    centre = world.world_from_camera[:3, 3]
    drop = points[:, 2] - centre[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (level - centre[2]) / drop
    along = centre + scale[:, None] * (points - centre)
    ok = (drop < -MIN_RAY_DROP_M) & (scale > 1 / MAX_DEPTH_FACTOR) & (scale < MAX_DEPTH_FACTOR)
    down = np.concatenate([points[:, :2], np.full((len(points), 1), level)], 1)
    return np.where(ok[:, None], along, down)


def contact_anchors(world: World, ankles: np.ndarray, contacts: np.ndarray, ankle_above_sole: float) -> np.ndarray:
    """(T, 2, 3) where each planted ankle should be (NaN elsewhere): for every run of frames in which an ankle is
    planted, its positions moved along their rays onto the run's level (the floor's ankle height when the run is
    within SNAP_M of it, else the run's own median height), and their median held for the whole run."""
    anchors = np.full(ankles.shape, np.nan)
    for k in range(ankles.shape[1]):
        for start, stop in runs_of(contacts[:, k]):
            points = ankles[start:stop, k].astype(np.float64)
            level = float(np.median(points[:, 2]))
            level = ankle_above_sole if abs(level - ankle_above_sole) < SNAP_M else level
            anchors[start:stop, k] = np.median(onto_level(world, points, level), axis=0)
    return anchors


def _difference(n: int, order: int) -> sparse.csr_matrix:
    """(n - order, n) the finite-difference operator of that order."""
    d = sparse.eye(n, format="csr")
    for _ in range(order):
        d = d[1:] - d[:-1]
    return d


def smooth_shift(wanted: np.ndarray) -> np.ndarray:
    """(N, 3) the shifts s of one run of frames that minimise the planted ankles' squared misses (`wanted`
    (N, 2, 3): the shift each would need, NaN where not planted) plus VELOCITY_WEIGHT |s'|^2 and
    ACCELERATION_WEIGHT |s''|^2 (per frame): a foot that lands or lifts does not make the body jump, between
    contacts the shift glides from one to the next, and beyond the first and last it stays constant."""
    n = len(wanted)
    count = np.isfinite(wanted[..., 0]).sum(1).astype(np.float64)
    if not count.any():
        return np.zeros((n, 3))
    system = sparse.diags(count + 1e-9)
    for order, weight in ((1, VELOCITY_WEIGHT), (2, ACCELERATION_WEIGHT)):
        if n > order:
            d = _difference(n, order)
            system = system + weight * (d.T @ d)
    return np.asarray(spsolve(system.tocsc(), np.nan_to_num(wanted).sum(1))).reshape(n, 3)


def settle_feet(world: World, joints_cam: np.ndarray, keypoints2d: np.ndarray, valid: np.ndarray,
                ankle_above_sole: float, fps: float) -> Settled:
    """The contact handling: the placed body moved in the world, frame by frame, so that a planted ankle
    (`planted`, from the 2D keypoints) stays at its run's anchor (`contact_anchors`: it neither slides nor floats
    or sinks), smoothly over time (`smooth_shift`), and then raised wherever the lower ankle would be below the
    floor. The pose is untouched, only the body's place changes; the camera-frame outputs, which reproject onto
    the image, keep the place found there, and this is the place in the world outputs."""
    joints = world.to_world(joints_cam.astype(np.float64))
    ankles = joints[:, list(ANKLES)]
    contacts = planted(keypoints2d, valid, fps) & valid[:, None] & np.isfinite(ankles).all(-1)
    anchors = contact_anchors(world, ankles, contacts, ankle_above_sole)
    wanted = anchors - ankles                                                        # NaN where not planted
    shift = np.zeros((len(valid), 3))
    for start, stop in runs_of(valid):
        shift[start:stop] = smooth_shift(wanted[start:stop])
    with np.errstate(invalid="ignore"):
        lowest = np.nanmin(np.where(np.isfinite(ankles[..., 2]), ankles[..., 2], np.inf), axis=1) + shift[:, 2]
    shift[:, 2] += np.where(valid & (lowest < ankle_above_sole), ankle_above_sole - lowest, 0.0)
    shift[~valid] = 0.0
    settled = joints + shift[:, None]
    settled[~valid] = np.nan
    return Settled(settled.astype(np.float32), shift, contacts, anchors)


def lock_feet(world: World, body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray, translation: np.ndarray,
              valid: np.ndarray, settled: Settled, ankle_above_sole: float = 0.0) -> Settled:
    """After `settle_feet`, the legs turned so that every planted ankle is exactly at its anchor (`body.foot_lock`,
    easing in and out over LOCK_RAMP frames): what translation alone leaves of a sliding foot. A turned leg can
    reach below the floor in a frame where it eases in: the body is raised there again (as `settle_feet` does), which
    never moves a planted foot (its anchor is above the floor). Returns the settled motion with the locked pose
    (`rotmats`) and its world joints and shift redone (the pelvis keeps its place). These are the world outputs;
    the camera-frame ones keep the model's pose, which is what the image supports (locking the legs to anchors found
    through the estimated floor costs 0.8 mm PA-MPJPE on the real-video benchmark). A body without Anny's leg
    bones gets its pose as it was."""
    from .body.foot_lock import lock_leg, lock_weights

    names = body.skeleton().names
    if settled.anchors is None or not all(b in names for leg in LEGS for b in leg):
        return Settled(settled.joints_world, settled.shift, settled.contacts, settled.anchors, rotmats)
    anchors_cam = world.to_camera(settled.anchors - settled.shift[:, None])     # where the ankles go
    targets, weights = lock_weights(anchors_cam - translation[:, None], LOCK_RAMP)    # pelvis-relative
    weights[~valid] = 0.0
    out = rotmats.copy()
    parents = body.skeleton().parents
    for shape in np.unique(shapes[valid], axis=0):
        rows = np.flatnonzero(valid & (shapes == shape).all(1))
        globals_, heads = _kinematics(body, out[rows], shape)
        for k, leg in enumerate(LEGS):
            bones = tuple(names.index(b) for b in leg)
            out[rows] = lock_leg(out[rows], globals_, heads, bones, parents[bones[0]], targets[rows, k],
                                 weights[rows, k])
            globals_, heads = _kinematics(body, out[rows], shape)      # the second leg sees the first's result
    joints_cam = _posed_joints(body, out, shapes, translation, valid)
    joints_world = world.to_world(joints_cam.astype(np.float64)) + settled.shift[:, None]
    with np.errstate(invalid="ignore"):
        lowest = np.nanmin(np.where(valid[:, None], joints_world[:, list(ANKLES), 2], np.inf), axis=1)
    raise_by = np.where(valid & (lowest < ankle_above_sole), ankle_above_sole - lowest, 0.0)
    shift = settled.shift + raise_by[:, None] * [0.0, 0.0, 1.0]
    joints_world[..., 2] += raise_by[:, None]
    joints_world[~valid] = np.nan
    return Settled(joints_world.astype(np.float32), shift, settled.contacts, settled.anchors, out)


def _kinematics(body: BodyModel, rotmats: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations (N, K, 3, 3) and bone heads (N, K, 3) of one shape's frames, the heads relative to the
    root's (the pelvis joint, where `translation` puts the body)."""
    s = torch.from_numpy(np.asarray(shape, np.float32))[None]
    rest = body.rest_model(s, with_vertices=False)["heads"]
    globals_, heads = body.posed_kinematics(torch.from_numpy(rotmats.astype(np.float32)), rest)
    heads = heads.numpy().astype(np.float64)
    return globals_.numpy().astype(np.float64), heads - heads[:, :1]


def _posed_joints(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray, translation: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
    """Camera-frame Human3.6M joints (T, 17, 3), the pelvis at `translation`; NaN where not valid."""
    joints = np.full((len(valid), 17, 3), np.nan)
    posed = joints_per_shape(body, rotmats[valid].astype(np.float32), shapes[valid].astype(np.float32))
    joints[valid] = posed - posed[:, :1] + translation[valid, None]
    return joints
