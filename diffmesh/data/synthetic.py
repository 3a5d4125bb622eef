"""Synthetic 2D inputs that look like the video pipeline's, made from the Anny fits of real mocap.

For each f-frame window of a fitted sequence: a random perspective camera (azimuth, distance, height, roll,
field of view, image format), projection of the body points MediaPipe would report, the same 33 -> 17 mapping
and per-clip normalisation the video pipeline uses (diffmesh/keypoints.py), and a detector noise model:
jitter (white plus slowly drifting), low-confidence and dropped joints, short occlusions of a limb, left/right
swaps, and joints outside the image. Every parameter and its range is in `CameraRanges` / `NoiseModel`.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..body.anny_body import ANNY_H36M_BONES, ANNY_POSED_BONES, AnnyBody
from ..body.base import H36M_FLIP
from ..keypoints import (MP_LEFT_ANKLE, MP_LEFT_EAR, MP_LEFT_ELBOW, MP_LEFT_HIP, MP_LEFT_KNEE, MP_LEFT_SHOULDER,
                         MP_LEFT_WRIST, MP_NOSE, MP_RIGHT_ANKLE, MP_RIGHT_EAR, MP_RIGHT_ELBOW, MP_RIGHT_HIP,
                         MP_RIGHT_KNEE, MP_RIGHT_SHOULDER, MP_RIGHT_WRIST, NUM_MP_LANDMARKS, USED_LANDMARKS,
                         mediapipe_to_h36m, normalize_clip)
from ..errors import SettingsError
from ..losses import Targets
from .prepare import FitSet

# Where each MediaPipe landmark sits on Anny: a bone head, or a vertex carried by the head bone. The vertices
# were picked on Anny's reference mesh: the nose tip (most forward point 1-7 cm below the eyes, on the midline)
# and the outermost points of the head at eye level behind the eyes (the ears).
ANNY_NOSE_VERTEX, ANNY_LEFT_EAR_VERTEX, ANNY_RIGHT_EAR_VERTEX = 297, 12006, 5423
ANNY_MEDIAPIPE = {
    MP_NOSE: ("vertex", ANNY_NOSE_VERTEX), MP_LEFT_EAR: ("vertex", ANNY_LEFT_EAR_VERTEX),
    MP_RIGHT_EAR: ("vertex", ANNY_RIGHT_EAR_VERTEX),
    MP_LEFT_SHOULDER: ("bone", "upperarm01.L"), MP_RIGHT_SHOULDER: ("bone", "upperarm01.R"),
    MP_LEFT_ELBOW: ("bone", "lowerarm01.L"), MP_RIGHT_ELBOW: ("bone", "lowerarm01.R"),
    MP_LEFT_WRIST: ("bone", "wrist.L"), MP_RIGHT_WRIST: ("bone", "wrist.R"),
    MP_LEFT_HIP: ("bone", "upperleg01.L"), MP_RIGHT_HIP: ("bone", "upperleg01.R"),
    MP_LEFT_KNEE: ("bone", "lowerleg01.L"), MP_RIGHT_KNEE: ("bone", "lowerleg01.R"),
    MP_LEFT_ANKLE: ("bone", "foot.L"), MP_RIGHT_ANKLE: ("bone", "foot.R"),
}
# Limbs in Human3.6M joint indices (for occlusions) and left/right pairs (for swaps).
LIMBS = ((4, 5, 6), (1, 2, 3), (11, 12, 13), (14, 15, 16))
SWAPS = ((1, 2, 3, 4, 5, 6), (11, 12, 13, 14, 15, 16))


@dataclass
class MotionBank:
    """Fitted frames of one split with everything the clip maker needs, world axes (z up), metres, F frames:
    rotmats (F, K, 3, 3); shape (F, S); joints (F, 17, 3) and landmarks (F, 33, 3) world positions (unused
    landmarks are zero); glitch (F,); window_starts: first frames of every f-frame window inside one sequence."""

    rotmats: np.ndarray
    shape: np.ndarray
    joints: np.ndarray
    landmarks: np.ndarray
    glitch: np.ndarray
    seq_names: list[str]
    seq_start: np.ndarray
    seq_len: np.ndarray


def _rest_points(body: AnnyBody, shape: np.ndarray) -> tuple[Tensor, Tensor]:
    """What posing one shape (S,) needs: its rest heads (1, 104, 3) and, for each vertex landmark of
    ANNY_MEDIAPIPE, the vertex's offset from the head bone's rest head (n, 3), which that bone carries rigidly."""
    rest = body.rest_model(torch.as_tensor(shape, dtype=torch.float32)[None])
    head = body.posed_index[ANNY_POSED_BONES.index("head")]
    vertices = [what for kind, what in ANNY_MEDIAPIPE.values() if kind == "vertex"]
    return rest["heads"], rest["vertices"][0, vertices] - rest["heads"][0, head]


def _posed_points(body: AnnyBody, rotmats: Tensor, rest: tuple[Tensor, Tensor], translation: Tensor
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Joints (T, 17, 3) and MediaPipe-equivalent landmarks (T, 33, 3; unused ones zero) of rotmats (T, K, 3, 3)
    posed on one shape's `_rest_points`, root at `translation` (T, 3)."""
    heads_rest, vertex_offsets = rest
    G, heads = body.posed_kinematics(rotmats, heads_rest)
    heads = heads + translation[:, None]
    joints = heads[:, [ANNY_POSED_BONES.index(b) for b in ANNY_H36M_BONES]]
    landmarks = heads.new_zeros(len(rotmats), NUM_MP_LANDMARKS, 3)
    head, v = ANNY_POSED_BONES.index("head"), 0
    for mp, (kind, what) in ANNY_MEDIAPIPE.items():
        if kind == "bone":                           # all are posed bones: their heads come out of the kinematics
            landmarks[:, mp] = heads[:, ANNY_POSED_BONES.index(what)]
        else:                                        # a vertex the head bone carries rigidly
            landmarks[:, mp] = heads[:, head] + (G[:, head] @ vertex_offsets[v][:, None])[..., 0]
            v += 1
    return joints.numpy(), landmarks.numpy()


@torch.no_grad()
def build_motion_bank(body: AnnyBody, fits: FitSet) -> MotionBank:
    """Joints and MediaPipe-equivalent points for every fitted frame (fast kinematics, one rest model per shape)."""
    F = len(fits.glitch)
    joints = np.zeros((F, 17, 3), np.float32)
    landmarks = np.zeros((F, NUM_MP_LANDMARKS, 3), np.float32)
    shapes, inverse = np.unique(fits.shape, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for u, shape in enumerate(shapes):
        frames = np.where(inverse == u)[0]
        joints[frames], landmarks[frames] = _posed_points(body, torch.as_tensor(fits.rotmats[frames]),
                                                          _rest_points(body, shape),
                                                          torch.as_tensor(fits.translation[frames]))
    return MotionBank(fits.rotmats, fits.shape, joints, landmarks, fits.glitch, fits.seq_names, fits.seq_start,
                      fits.seq_len)


class ShapePool:
    """Body shape augmentation: `size` random shape logits, each component N(0, std) (0 is Anny's mean body;
    the CMU subjects' fits spread by only 0.01-0.13), with what posing them needs computed once, so that a clip
    can wear another body than its subject's at the cost of the fast kinematics only."""

    def __init__(self, body: AnnyBody, std: float, size: int = 256, seed: int = 0):
        if std <= 0:
            raise SettingsError(f"the shape spread must be positive, got {std}")
        rng = np.random.default_rng([seed, 77])
        self.body = body
        self.shapes = rng.normal(0.0, std, (size, body.num_shape)).astype(np.float32)
        with torch.no_grad():
            self.rest = [_rest_points(body, s) for s in self.shapes]

    @torch.no_grad()
    def pose(self, k: int, rotmats: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joints (T, 17, 3) and landmarks (T, 33, 3) of rotmats on pool shape k, the root (pelvis) at `root`
        (T, 3) as in the bank."""
        return _posed_points(self.body, torch.as_tensor(rotmats), self.rest[k], torch.as_tensor(root))


def window_starts(bank: MotionBank, f: int, stride: int) -> np.ndarray:
    """First frames of all f-frame windows with the given stride that stay inside one sequence."""
    starts = [s + np.arange(0, n - f + 1, stride) for s, n in zip(bank.seq_start, bank.seq_len) if n >= f]
    return np.concatenate(starts) if starts else np.zeros(0, np.int64)


@dataclass
class CameraRanges:
    distance: tuple[float, float] = (2.5, 8.0)       # horizontal, camera to the person's mean position, metres
    height: tuple[float, float] = (0.3, 2.5)         # camera above the floor, metres
    roll_deg: float = 4.0                            # std of the roll, clipped at 3 std
    look_jitter: float = 0.15                        # std of the look-at point around the pelvis, metres
    fov_deg: tuple[float, float] = (45.0, 80.0)      # field of view across the longer image side
    # (width, height, probability): landscape HD, portrait phone, square.
    formats: tuple = ((1280, 720, 0.6), (720, 1280, 0.25), (1080, 1080, 0.15))


@dataclass
class Camera:
    """world -> camera: x_cam = R (x_world - position); axes x right, y down, z forward; pixels u = focal x/z + cx."""

    R: np.ndarray
    position: np.ndarray
    focal: float
    width: int
    height: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = (points - self.position) @ self.R.T
        z = np.maximum(cam[..., 2:], 1e-3)
        uv = self.focal * cam[..., :2] / z + np.array([self.width / 2, self.height / 2])
        return uv.astype(np.float32), cam[..., 2]


def random_camera(rng: np.random.Generator, centre: np.ndarray, ranges: CameraRanges = CameraRanges()) -> Camera:
    """A camera looking at `centre` (3,) world point (z up), with parameters drawn from `ranges`."""
    azimuth = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(*ranges.distance)
    position = np.array([centre[0] + dist * np.cos(azimuth), centre[1] + dist * np.sin(azimuth),
                         rng.uniform(*ranges.height)])
    target = centre + rng.normal(0, ranges.look_jitter, 3)
    fwd = target - position
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    roll = np.deg2rad(np.clip(rng.normal(0, ranges.roll_deg), -3 * ranges.roll_deg, 3 * ranges.roll_deg))
    c, s = np.cos(roll), np.sin(roll)
    R = np.stack([c * right + s * down, -s * right + c * down, fwd])
    probs = np.array([p for _, _, p in ranges.formats])
    w, h, _ = ranges.formats[rng.choice(len(probs), p=probs / probs.sum())]
    fov = np.deg2rad(rng.uniform(*ranges.fov_deg))
    focal = (max(w, h) / 2) / np.tan(fov / 2)
    return Camera(R.astype(np.float32), position.astype(np.float32), float(focal), int(w), int(h))


def sequence_camera(rng: np.random.Generator, pelvis: np.ndarray, ranges: CameraRanges = CameraRanges()) -> Camera:
    """One fixed camera filming a whole sequence, as a video would: aimed at the mean of the pelvis path (T, 3),
    its distance range moved out by the path's farthest excursion so that the whole walk stays in front of it.
    The evaluation clips (`fixed_clips`) and the rendered MediaPipe set (`render_set.py`) both draw theirs here."""
    centre = pelvis.mean(0)
    reach = float(np.linalg.norm(pelvis[:, :2] - centre[:2], axis=-1).max())
    d0, d1 = ranges.distance
    return random_camera(rng, centre, replace(ranges, distance=(d0 + reach, d1 + reach)))


@dataclass
class NoiseModel:
    """A 2D detector's errors; each clip draws its own levels from these ranges. Sizes are fractions of the
    person's height in the image. The defaults match MediaPipe's errors on rendered mocap (`diffmesh prepare
    --render`, docs/data.md section 3): small white jitter, a slow drift that carries most of the error (MediaPipe's
    keypoints are smooth from frame to frame but off by 1-2 % of the height for seconds), occasional low-confidence
    joints, occluded limbs and left/right swaps."""

    enabled: bool = True
    jitter: tuple[float, float] = (0.0, 0.001)       # white noise std
    drift: tuple[float, float] = (0.006, 0.022)      # AR(1) noise std (stationary)
    drift_correlation: float = 0.99                   # the drift's correlation from one frame to the next
    low_confidence: tuple[float, float] = (0.0, 0.06)   # per joint-frame probability; conf U(0.05, 0.5), more noise
    low_confidence_noise: float = 0.03                # std of the extra noise of a low-confidence joint
    dropped: tuple[float, float] = (0.0, 0.005)      # per joint-frame probability; conf 0, position off by ~15 %
    occlusion: float = 0.6                            # per clip: one limb occluded for 2-8 frames
    swap: float = 0.1                                 # per clip: left/right legs or arms swapped for 1-4 frames
    outside_conf: float = 0.3                         # confidence factor of joints outside the image
    drift_from_zero: bool = False                     # the hand-made model's drift started at zero

    def apply(self, rng: np.random.Generator, kp: np.ndarray, width: int, height: int) -> np.ndarray:
        """kp (T, 17, 2) exact pixels -> (T, 17, 3) noisy pixels with confidences."""
        T, J, _ = kp.shape
        span = kp[..., 1].max(1) - kp[..., 1].min(1)
        size = max(float(np.median(span)), 10.0)
        conf = np.clip(rng.normal(0.9, 0.05, (T, J)), 0.5, 1.0)
        conf[:, [3, 6, 13, 16]] -= 0.1                 # ankles and wrists: the detector is less sure
        if not self.enabled:
            return np.concatenate([kp, np.ones((T, J, 1), np.float32)], -1)
        xy = kp + rng.normal(0, rng.uniform(*self.jitter) * size, kp.shape)
        rho, drift_std = self.drift_correlation, rng.uniform(*self.drift) * size
        # Started from its stationary spread (or at zero, stepped once more, as the hand-made model did).
        ar = np.zeros((J, 2)) if self.drift_from_zero else rng.normal(0, drift_std, (J, 2))
        for t in range(T):
            if t or self.drift_from_zero:
                ar = rho * ar + rng.normal(0, drift_std * np.sqrt(1 - rho * rho), (J, 2))
            xy[t] += ar
        low = rng.random((T, J)) < rng.uniform(*self.low_confidence)
        conf[low] = rng.uniform(0.05, 0.5, low.sum())
        xy[low] += rng.normal(0, self.low_confidence_noise * size, (low.sum(), 2))
        drop = rng.random((T, J)) < rng.uniform(*self.dropped)
        conf[drop] = 0.0
        xy[drop] += rng.normal(0, 0.15 * size, (drop.sum(), 2))
        if rng.random() < self.occlusion:
            limb, length = LIMBS[rng.integers(len(LIMBS))], int(rng.integers(2, 9))
            t0 = int(rng.integers(0, max(T - length, 0) + 1))
            sl = slice(t0, t0 + length)
            conf[sl, list(limb)] = rng.uniform(0.0, 0.35, (len(range(T)[sl]), len(limb)))
            xy[sl, list(limb)] = xy[t0, list(limb)] + rng.normal(0, 0.05 * size, 2)
        if rng.random() < self.swap:
            pair, length = SWAPS[rng.integers(len(SWAPS))], int(rng.integers(1, 5))
            t0 = int(rng.integers(0, max(T - length, 0) + 1))
            idx = list(pair)
            flipped = [H36M_FLIP[i] for i in idx]
            xy[t0:t0 + length, idx] = xy[t0:t0 + length, flipped].copy()
        outside = (xy[..., 0] < 0) | (xy[..., 0] > width) | (xy[..., 1] < 0) | (xy[..., 1] > height)
        conf[outside] *= self.outside_conf
        return np.concatenate([xy, np.clip(conf, 0, 1)[..., None]], -1).astype(np.float32)


# The noise models by name. "mediapipe" (the defaults above) is fitted to MediaPipe's errors on the rendered set;
# "hand-made" is the model the shipped weights were trained and the synthetic split's recorded figures scored with
# (docs/results.md), kept so that both still reproduce until the models are retrained on the new one (issue 14).
NOISE_MODELS = {
    "mediapipe": NoiseModel(),
    "hand-made": NoiseModel(jitter=(0.002, 0.010), drift=(0.0, 0.008), drift_correlation=0.8,
                            low_confidence_noise=0.03, dropped=(0.0, 0.02), occlusion=0.35, swap=0.15,
                            drift_from_zero=True),
}
DEFAULT_NOISE_MODEL = "hand-made"


def noise_model(name: str = DEFAULT_NOISE_MODEL, enabled: bool = True) -> NoiseModel:
    if name not in NOISE_MODELS:
        raise SettingsError(f"unknown noise model {name!r}; choose from {', '.join(NOISE_MODELS)}")
    return replace(NOISE_MODELS[name], enabled=enabled)


# How a training clip's camera is drawn: "sequence" (`sequence_camera`: one camera aimed at the whole sequence's
# path, the model of the evaluation clips and the rendered set, so training and test cameras agree) or "clip" (a
# camera aimed at the clip itself, nearer on average: the shipped checkpoints were trained so).
CAMERA_MODELS = ("sequence", "clip")


@dataclass
class ClipMaker:
    """Turns windows of a MotionBank into model inputs and targets (see the module docstring)."""

    bank: MotionBank
    num_frames: int = 16
    noise: NoiseModel = field(default_factory=NoiseModel)
    cameras: CameraRanges = field(default_factory=CameraRanges)
    camera_model: str = "sequence"     # CAMERA_MODELS
    shapes: ShapePool | None = None    # with a pool, `shape_prob` of the clips wear one of its bodies
    shape_prob: float = 0.5

    def __post_init__(self):
        if self.camera_model not in CAMERA_MODELS:
            raise SettingsError(f"unknown camera model {self.camera_model!r}; choose from {', '.join(CAMERA_MODELS)}")

    def draw_camera(self, start: int, rng: np.random.Generator) -> Camera:
        """A random camera for the clip at `start`, by `camera_model`."""
        b = self.bank
        if self.camera_model == "clip":
            return random_camera(rng, b.joints[start:start + self.num_frames, 0].mean(0), self.cameras)
        s = int(np.searchsorted(b.seq_start, start, side="right") - 1)
        a, n = int(b.seq_start[s]), int(b.seq_len[s])
        return sequence_camera(rng, b.joints[a:a + n, 0], self.cameras)

    def make(self, start: int, rng: np.random.Generator, camera: Camera | None = None) -> tuple[np.ndarray, dict]:
        """One clip: inputs (f, 17, 3) normalised keypoints; targets as numpy arrays (see `batch`). Without a
        `camera`, one is drawn by `camera_model`."""
        b, sl = self.bank, slice(start, start + self.num_frames)
        joints, landmarks, shape = b.joints[sl], b.landmarks[sl], b.shape[start]
        cam = camera if camera is not None else self.draw_camera(start, rng)
        if self.shapes is not None and rng.random() < self.shape_prob:
            k = int(rng.integers(len(self.shapes.shapes)))
            joints, landmarks = self.shapes.pose(k, b.rotmats[sl], joints[:, 0])
            shape = self.shapes.shapes[k]
        lm_px, _ = cam.project(landmarks)
        conf = np.zeros(landmarks.shape[:2], np.float32)
        conf[:, list(USED_LANDMARKS)] = 1.0
        exact = mediapipe_to_h36m(lm_px, conf)[..., :2]
        noisy = self.noise.apply(rng, exact, cam.width, cam.height)
        inputs, centre, scale = normalize_clip(noisy)
        gt_px, _ = cam.project(joints)
        rotmats = b.rotmats[sl].copy()
        rotmats[:, 0] = cam.R @ rotmats[:, 0]
        targets = dict(rotmats=rotmats, shape=shape, joints3d=(joints - joints[:, :1]) @ cam.R.T,
                       keypoints2d=(gt_px - centre) / scale, valid=~b.glitch[sl])
        return inputs, targets

    def batch(self, starts, rngs, cameras=None) -> tuple[torch.Tensor, Targets]:
        """Clips at `starts`, one generator (and optionally one camera) each -> inputs (B, f, 17, 3) and Targets
        (see losses.Targets)."""
        cameras = cameras if cameras is not None else [None] * len(starts)
        return stack_clips([self.make(int(s), r, c) for s, r, c in zip(starts, rngs, cameras)])


def stack_clips(made: list[tuple[np.ndarray, dict]]) -> tuple[torch.Tensor, Targets]:
    """Clips as the clip makers' `make` returns them (inputs, targets dict) -> inputs (B, f, 17, C) float32 and
    Targets; shared by every clip maker (synthetic, render, mixed batches)."""
    x = torch.as_tensor(np.stack([m[0] for m in made])).float()
    t = {k: torch.as_tensor(np.stack([np.asarray(m[1][k]) for m in made])).float() for k in made[0][1]}
    return x, Targets(t["rotmats"], t["shape"], t["joints3d"], t["keypoints2d"], t["valid"].bool())


def fixed_clips(bank: MotionBank, num_frames: int, seed: int, limit: int | None = None
                ) -> tuple[np.ndarray, list, list[Camera]]:
    """The evaluation windows: non-overlapping f-frame windows of every sequence (the remainder of each
    sequence is left out). Each sequence is filmed by one camera, as a video would be (seeded by (seed,
    sequence)), and each window draws its noise from a generator seeded by (seed, window), so every method and
    every run sees the same input. Returns starts, generators, cameras (one per window)."""
    starts = window_starts(bank, num_frames, num_frames)
    if limit is not None:
        starts = starts[np.linspace(0, len(starts) - 1, min(limit, len(starts))).astype(int)]
    seq = np.searchsorted(bank.seq_start, starts, side="right") - 1
    cams = {}
    for s in np.unique(seq):
        a, n = bank.seq_start[s], bank.seq_len[s]
        cams[s] = sequence_camera(np.random.default_rng([seed, 1_000_000 + int(s)]), bank.joints[a:a + n, 0])
    rngs = [np.random.default_rng([seed, i]) for i in range(len(starts))]
    return starts, rngs, [cams[s] for s in seq]
