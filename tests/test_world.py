"""The world frame: gravity and the ground from planted feet, on people made up in a known world and filmed by a
known camera, then the exports placed in it."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from diffmesh.world import ANKLES, HEAD, body_up, fit_ground, for_exports, refine_up

FPS = 30.0
FOCAL, CENTRE = 1000.0, np.array([640.0, 360.0])
SOLE = 0.07                                        # ankle above the sole


def _camera(height: float, pitch_deg: float):
    """world (z up) -> camera (x right, y down, z forward): a camera `height` m above the ground looking along
    world +y, pitched down by `pitch_deg`."""
    base = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])          # world x, -z, y as camera x, y, z
    R = Rotation.from_euler("x", -pitch_deg, degrees=True).as_matrix() @ base
    return R, -R @ np.array([0.0, 0.0, height])


def _person(T: int, start, step, floor: float, rng, walking: bool = True) -> np.ndarray:
    """(T, 17, 3) world joints of a made-up person standing upright on z = floor and walking along x with one
    foot planted at a time (each foot still for 10 frames, then swinging 10 cm above the floor for 10)."""
    joints = np.zeros((T, 17, 3))
    joints[:, :, 1] = start[1]
    joints[:, :, 2] = floor + SOLE + rng.uniform(0.0, 1.6, 17)            # every joint somewhere up the body
    joints[:, HEAD, 2] = floor + 1.7
    swinging = np.array([[walking and (t // 10) % 2 != a for a in range(2)] for t in range(T)])
    feet_x = start[0] + np.array([0.0, 0.2]) + np.cumsum(swinging * step, 0)
    joints[:, list(ANKLES), 0] = feet_x
    joints[:, list(ANKLES), 2] = floor + SOLE + 0.1 * swinging
    others = [j for j in range(17) if j not in ANKLES]
    joints[:, others, 0] = feet_x.mean(1)[:, None]                          # the body above its feet
    return joints


def _seen(world_joints: np.ndarray, R, t, rng, depth_noise: float = 0.05, depth_error=None):
    """Camera-frame joints with the depth jitter of a monocular body (along each joint's line of sight, so the
    image does not change; white noise, or the given per-frame `depth_error` (T,)), and the exact 2D keypoints
    (px + confidence)."""
    clean = world_joints @ R.T + t
    sight = clean / np.linalg.norm(clean, axis=-1, keepdims=True)
    error = rng.normal(0, depth_noise, len(clean)) if depth_error is None else depth_error
    cam = clean + error[:, None, None] * sight
    px = clean[..., :2] / clean[..., 2:] * FOCAL + CENTRE
    return cam, np.concatenate([px, np.full((*px.shape[:2], 1), 0.9)], -1)


@pytest.mark.parametrize("height, pitch", [(1.5, 10.0), (2.5, 25.0)])
def test_the_ground_and_camera_height_come_back_for_a_walker_and_someone_on_a_box(height, pitch):
    rng = np.random.default_rng(0)
    R, t = _camera(height, pitch)
    T = 120
    walker = _person(T, (-1.5, 6.0), 0.02, 0.0, rng)                       # walks across, 6 m away
    on_box = _person(T, (1.0, 8.0), 0.02, 1.0, rng)                        # on a 1 m box, further away
    people = []
    for joints in (walker, on_box):
        cam, kp = _seen(joints, R, t, rng)
        people.append((cam, kp, np.ones(T, bool), SOLE))
    world = fit_ground(people, FPS)
    assert world is not None
    assert abs(world.camera_height_m - height) < 0.05                     # the floor, not the box top
    true_up = R @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(np.clip(world.up @ true_up, -1, 1))) < 2.0
    feet = world.to_world(people[0][0][:, list(ANKLES)])
    planted = feet[..., 2] < SOLE + 0.05                                   # the walker's planted feet
    assert abs(np.median(feet[planted][:, 2]) - SOLE) < 0.05
    assert abs(np.median(world.to_world(people[1][0][:, ANKLES[0]])[:, 2]) - (1.0 + SOLE)) < 0.15


def _angle(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_gravity_comes_from_planted_feet_where_people_lean(monkeypatch):
    """Two walkers leaning 6 degrees forward (the head ahead of the feet, as walking people do): the bodies' up is
    6 degrees off gravity, the floor their planted feet spread over is not (`world.REFINE_UP`, not yet the
    default)."""
    monkeypatch.setattr("diffmesh.world.REFINE_UP", True)
    rng = np.random.default_rng(3)
    R, t = _camera(2.0, 15.0)
    T = 120
    people = []
    for start in ((-1.5, 6.0), (-1.0, 9.0)):
        joints = _person(T, start, 0.02, 0.0, rng)
        joints[:, HEAD, 0] += 1.63 * np.tan(np.radians(6.0))
        cam, kp = _seen(joints, R, t, rng)
        people.append((cam, kp, np.ones(T, bool), SOLE))
    true_up = R @ np.array([0.0, 0.0, 1.0])
    assert _angle(body_up(people), true_up) > 4.0
    world = fit_ground(people, FPS)
    assert world is not None and _angle(world.up, true_up) < 1.5
    assert abs(world.camera_height_m - 2.0) < 0.05


def test_refined_up_takes_the_tilt_the_spots_show_and_keeps_the_prior_about_a_line():
    rng = np.random.default_rng(4)
    true_up = np.array([0.0, 0.0, 1.0])
    tilted = Rotation.from_euler("xy", [6.0, 6.0], degrees=True).apply(true_up)   # the prior: off about x and y
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 5), np.linspace(-2, 2, 5)), -1).reshape(-1, 2)
    spread = np.c_[grid, rng.normal(0, 0.02, len(grid))]                 # spots over a 4 m square of floor
    assert _angle(refine_up(spread, tilted), true_up) < 1.0
    line = np.c_[np.linspace(-2, 2, 12), np.zeros(12), rng.normal(0, 0.02, 12)]   # one walk along x
    about_x = Rotation.from_euler("x", 6.0, degrees=True).apply(true_up)  # the tilt a line along x cannot show
    assert _angle(refine_up(line, tilted), about_x) < 1.0


def test_no_world_without_planted_feet():
    rng = np.random.default_rng(1)
    R, t = _camera(1.5, 10.0)
    runner = _person(60, (-2.0, 6.0), 0.05, 0.0, rng)
    runner[:, list(ANKLES), 0] += np.arange(60)[:, None] * 0.1              # both feet always moving
    cam, kp = _seen(runner, R, t, rng)
    assert fit_ground([(cam, kp, np.ones(60, bool), SOLE)], FPS) is None
    assert fit_ground([], FPS) is None


def test_exports_get_the_world_with_its_up_as_their_y():
    """What the exports write (camera axes turned by C, the 180-degree turn about x) is the world with z as Y:
    a body standing on the ground stands on the files' floor."""
    rng = np.random.default_rng(2)
    R, t = _camera(1.8, 15.0)
    walker = _person(80, (0.0, 5.0), 0.02, 0.0, rng)
    cam, kp = _seen(walker, R, t, rng, depth_noise=0.0)
    world = fit_ground([(cam, kp, np.ones(80, bool), SOLE)], FPS)
    rotmats = np.tile(np.eye(3, dtype=np.float32), (80, 24, 1, 1))
    rotmats[:, 0] = R.astype(np.float32)                                   # the root turned as the camera sees it
    out_rot, out_pos = for_exports(world, rotmats, cam[:, 0])
    C = np.diag([1.0, -1.0, -1.0])
    written = out_pos @ C.T                                                # export.py's camera -> glTF
    assert np.allclose(written[:, 1], world.to_world(cam[:, 0])[:, 2], atol=1e-5)     # glTF Y = height
    assert np.allclose(written[:, 1], walker[:, 0, 2], atol=0.02)
    root = C @ out_rot[0, 0]                                               # the root's rotation as written
    assert np.allclose(root @ np.array([0.0, 0.0, 1.0]), [0.0, 1.0, 0.0], atol=0.02)   # world up is the files' Y
    assert np.array_equal(out_rot[:, 1:], rotmats[:, 1:])


def test_skating_and_penetration_measure_what_a_foot_does():
    """A planted foot sliding 3 mm a frame at 30 fps skates 3 mm/frame (the same 3 mm a frame at 60 fps is 6 mm a
    frame at 30 fps); a sole 2 cm below the ground penetrates 2 cm."""
    from diffmesh.world import foot_skating_mm, penetration_m

    T = 40
    joints = np.zeros((T, 17, 3))
    joints[:, ANKLES[0], 0] = np.arange(T) * 0.003                     # the right foot slides along x
    joints[:, ANKLES[1], 0] = np.arange(T) * 0.05                      # the left one swings (not planted)
    joints[:, list(ANKLES), 2] = SOLE
    planted = np.zeros((T, 2), bool)
    planted[:, 0] = True
    assert foot_skating_mm(joints, planted, 30.0) == pytest.approx(3.0)
    assert foot_skating_mm(joints, planted, 60.0) == pytest.approx(6.0)
    assert np.isnan(foot_skating_mm(joints, np.zeros((T, 2), bool), 30.0))
    joints[10:20, ANKLES[1], 2] = SOLE - 0.02
    depth = penetration_m(joints, np.ones(T, bool), SOLE)
    assert np.allclose(depth[10:20], 0.02) and np.allclose(np.delete(depth, range(10, 20)), 0.0)


def test_settled_feet_stay_put_on_their_level_and_the_image_keeps_them():
    """A walker filmed with the depth jitter of a monocular body slides and sinks in the world; after
    `settle_feet` a planted foot moves a fraction of that, stands on the floor, and no sole is below it; the man
    on a 1 m box stays on the box. The pose is untouched: the settled ankles are the placed ones moved by the
    body's shift."""
    from diffmesh.world import foot_skating_mm, penetration_m, planted, settle_feet

    rng = np.random.default_rng(3)
    R, t = _camera(2.0, 15.0)
    T = 120
    walker = _person(T, (-1.5, 6.0), 0.02, 0.0, rng)
    on_box = _person(T, (1.0, 8.0), 0.02, 1.0, rng)
    drift = 0.3 * np.sin(np.arange(T) / FPS * 2 * np.pi / 1.5)          # the placement's slow depth error
    seen = [_seen(joints, R, t, rng, depth_error=drift + rng.normal(0, 0.01, T)) for joints in (walker, on_box)]
    valid = np.ones(T, bool)
    world = fit_ground([(cam, kp, valid, SOLE) for cam, kp in seen], FPS)
    (cam, kp), (box_cam, box_kp) = seen
    contacts = planted(kp, valid, FPS)
    before = world.to_world(cam)
    settled = settle_feet(world, cam, kp, valid, SOLE, FPS)
    assert np.array_equal(settled.contacts, contacts) and contacts.sum() >= 60     # 6 of every 10 still frames
    skating_before = foot_skating_mm(before, contacts, FPS)
    assert skating_before > 20                                              # the jitter's slide
    assert foot_skating_mm(settled.joints_world, contacts, FPS) < 0.3 * skating_before
    ankles = settled.joints_world[:, list(ANKLES)]
    assert np.abs(ankles[contacts][:, 2] - SOLE).mean() < 0.01 < np.abs(before[:, list(ANKLES)][contacts][:, 2]
                                                                          - SOLE).mean()
    assert penetration_m(settled.joints_world, valid, SOLE).max() < 1e-6 < penetration_m(before, valid, SOLE).max()
    assert np.allclose(settled.joints_world - before, settled.shift[:, None], atol=1e-4)
    box = settle_feet(world, box_cam, box_kp, valid, SOLE, FPS)
    box_feet = box.joints_world[:, list(ANKLES)][box.contacts]
    assert abs(np.median(box_feet[:, 2]) - (1.0 + SOLE)) < 0.15


def test_no_frames_no_contacts_and_nothing_moved():
    from diffmesh.world import settle_feet

    rng = np.random.default_rng(4)
    R, t = _camera(1.5, 10.0)
    walker = _person(60, (-1.5, 6.0), 0.02, 0.0, rng)
    cam, kp = _seen(walker, R, t, rng)
    world = fit_ground([(cam, kp, np.ones(60, bool), SOLE)], FPS)
    empty = settle_feet(world, np.full_like(cam, np.nan), kp, np.zeros(60, bool), SOLE, FPS)
    assert not empty.contacts.any() and np.isnan(empty.joints_world).all() and not empty.shift.any()


def _anny_poses(body, T: int, rng) -> np.ndarray:
    """(T, K, 3, 3) Anny poses: a slight random bend at every bone, the knees bent 20-40 degrees (so the legs can
    reach around their ankles), the root upright in the camera."""
    from diffmesh.body.base import camera_upright_root

    names = body.skeleton().names
    rot = Rotation.from_rotvec(rng.normal(0, 0.1, (T * len(names), 3))).as_matrix().reshape(T, len(names), 3, 3)
    for knee in ("lowerleg01.R", "lowerleg01.L"):
        rot[:, names.index(knee)] = Rotation.from_euler("x", rng.uniform(20, 40, (T, 1)), degrees=True).as_matrix()
    rot[:, 0] = camera_upright_root().numpy()
    return rot


def test_leg_ik_puts_the_ankle_on_its_target_and_keeps_the_hip_the_bones_and_the_sole(anny_body):
    from diffmesh.body.foot_lock import lock_leg
    from diffmesh.world import LEGS, _kinematics

    rng = np.random.default_rng(5)
    names, parents = anny_body.skeleton().names, anny_body.skeleton().parents
    rot, shape = _anny_poses(anny_body, 20, rng), np.zeros(6, np.float32)
    g, h = _kinematics(anny_body, rot, shape)
    up, low, foot = bones = tuple(names.index(b) for b in LEGS[0])
    target = h[:, foot] + rng.normal(0, 0.02, (20, 3))                      # 2 cm away: within reach
    new = lock_leg(rot, g, h, bones, parents[up], target, np.ones(20))
    g2, h2 = _kinematics(anny_body, new, shape)
    assert np.linalg.norm(h2[:, foot] - target, axis=-1).max() < 1e-5
    assert np.allclose(h2[:, up], h[:, up], atol=1e-6)                       # the hip stays
    for a, b in ((up, low), (low, foot)):                                    # the bones keep their lengths
        assert np.allclose(np.linalg.norm(h2[:, b] - h2[:, a], axis=-1), np.linalg.norm(h[:, b] - h[:, a], axis=-1),
                           atol=1e-5)
    assert np.allclose(g2[:, foot], g[:, foot], atol=1e-5)                   # the sole does not tilt
    others = [k for k in range(len(names)) if k not in bones]
    assert np.array_equal(new[:, others], rot[:, others])
    far = h[:, up] + 5.0 * (h[:, foot] - h[:, up])                           # out of reach: the leg points there
    g3, h3 = _kinematics(anny_body, lock_leg(rot, g, h, bones, parents[up], far, np.ones(20)), shape)
    towards = (h3[:, foot] - h3[:, up]) / np.linalg.norm(h3[:, foot] - h3[:, up], axis=-1, keepdims=True)
    wanted = (far - h[:, up]) / np.linalg.norm(far - h[:, up], axis=-1, keepdims=True)
    assert (towards * wanted).sum(-1).min() > 0.999


def test_locked_feet_stay_on_their_anchor_and_ease_in_and_out(anny_body):
    """A body whose legs jitter and whose right foot is planted for frames 10-29: after `lock_feet` the right
    ankle sits on its anchor in every planted frame (no sliding at all), frames outside the ramp keep their pose,
    and the camera-frame pelvis does not move."""
    from diffmesh.world import LOCK_RAMP, Settled, World, lock_feet

    rng = np.random.default_rng(6)
    T = 40
    rot, shapes = _anny_poses(anny_body, T, rng), np.zeros((T, 6), np.float32)
    translation = np.tile([0.0, 0.3, 4.0], (T, 1))
    R, t = _camera(2.0, 15.0)
    to_world = np.eye(4)
    to_world[:3, :3], to_world[:3, 3] = R.T, -R.T @ t
    world = World(np.array([0.0, -1.0, 0.0]), 2.0, to_world, 0, 0, 0.0)
    valid = np.ones(T, bool)
    from diffmesh.world import _posed_joints

    before = world.to_world(_posed_joints(anny_body, rot, shapes, translation, valid))
    contacts = np.zeros((T, 2), bool)
    contacts[10:30, 0] = True
    anchors = np.full((T, 2, 3), np.nan)
    anchors[10:30, 0] = np.median(before[10:30, ANKLES[0]], 0)
    settled = Settled(before.astype(np.float32), np.zeros((T, 3)), contacts, anchors)
    locked = lock_feet(world, anny_body, rot, shapes, translation, valid, settled)
    new_rot = locked.rotmats
    right = locked.joints_world[:, ANKLES[0]]
    assert np.linalg.norm(right[10:30] - anchors[10:30, 0], axis=-1).max() < 1e-4
    assert np.linalg.norm(before[10:30, ANKLES[0]] - anchors[10:30, 0], axis=-1).max() > 0.01   # it was sliding
    untouched = np.r_[0:10 - LOCK_RAMP, 30 + LOCK_RAMP:T]
    assert np.array_equal(new_rot[untouched], rot[untouched])
    assert not np.array_equal(new_rot[10 - LOCK_RAMP:10], rot[10 - LOCK_RAMP:10])     # easing in
    assert np.allclose(world.to_camera(locked.joints_world[:, 0].astype(float)), translation, atol=1e-5)
