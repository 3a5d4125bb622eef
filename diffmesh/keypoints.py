"""The 2D keypoint layout the model reads, shared by the video pipeline and the synthetic training data.

MediaPipe Pose gives 33 landmarks; the model reads 17 in Human3.6M order as (x, y, confidence). Joints that
Human3.6M has and MediaPipe lacks are built from landmarks (pelvis = mid-hips, thorax = mid-shoulders,
spine = their midpoint, head = mid-ears, neck/nose = nose); a built joint's confidence is its parts' lowest.
Coordinates are then normalised per clip (see `normalize_clip`), so image size and resolution drop out.
"""

import numpy as np

# MediaPipe Pose landmark indices (the ones the mapping reads).
MP_NOSE, MP_LEFT_EAR, MP_RIGHT_EAR = 0, 7, 8
MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER, MP_LEFT_ELBOW, MP_RIGHT_ELBOW = 11, 12, 13, 14
MP_LEFT_WRIST, MP_RIGHT_WRIST, MP_LEFT_HIP, MP_RIGHT_HIP = 15, 16, 23, 24
MP_LEFT_KNEE, MP_RIGHT_KNEE, MP_LEFT_ANKLE, MP_RIGHT_ANKLE = 25, 26, 27, 28
NUM_MP_LANDMARKS = 33

# Each Human3.6M joint as the mean of these MediaPipe landmarks ('spine' is special-cased below).
H36M_FROM_MEDIAPIPE = (
    (MP_LEFT_HIP, MP_RIGHT_HIP),            # 0 pelvis
    (MP_RIGHT_HIP,), (MP_RIGHT_KNEE,), (MP_RIGHT_ANKLE,),
    (MP_LEFT_HIP,), (MP_LEFT_KNEE,), (MP_LEFT_ANKLE,),
    (MP_LEFT_HIP, MP_RIGHT_HIP, MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER),   # 7 spine: mid(pelvis, thorax)
    (MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER),  # 8 thorax
    (MP_NOSE,),                             # 9 neck/nose
    (MP_LEFT_EAR, MP_RIGHT_EAR),            # 10 head
    (MP_LEFT_SHOULDER,), (MP_LEFT_ELBOW,), (MP_LEFT_WRIST,),
    (MP_RIGHT_SHOULDER,), (MP_RIGHT_ELBOW,), (MP_RIGHT_WRIST,),
)
# The landmarks the mapping uses, in a fixed order (the synthetic data renders exactly these).
USED_LANDMARKS = tuple(sorted({i for group in H36M_FROM_MEDIAPIPE for i in group}))
# Joints that are the same body points in the 2D layout and the body models' 3D joints (hips, knees, ankles,
# shoulders, elbows, wrists). The others are built differently on each side (2D pelvis = mid-hips, 2D head =
# mid-ears, ...), so they would bias the camera solve and the reprojection error.
SHARED_JOINTS = (1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16)
MIN_CONFIDENCE = 0.3    # joints below this do not set the normalisation box


def mediapipe_to_h36m(landmarks: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """MediaPipe landmarks (..., 33, 2) in pixels and their confidences (..., 33) -> keypoints (..., 17, 3) as
    (x, y, confidence) in pixels, Human3.6M order."""
    xy = np.stack([landmarks[..., list(g), :].mean(-2) for g in H36M_FROM_MEDIAPIPE], -2)
    conf = np.stack([confidence[..., list(g)].min(-1) for g in H36M_FROM_MEDIAPIPE], -1)
    return np.concatenate([xy, conf[..., None]], -1).astype(np.float32)


def world_h36m(world: np.ndarray) -> np.ndarray:
    """MediaPipe's world landmarks (..., 33, 3) (metres, hip-centred) -> (..., 17, 3) Human3.6M joints built as
    `mediapipe_to_h36m` builds the 2D ones, made root-relative (the pelvis, mid-hips, at the origin)."""
    xyz = np.stack([world[..., list(g), :].mean(-2) for g in H36M_FROM_MEDIAPIPE], -2)
    return (xyz - xyz[..., :1, :]).astype(np.float32)


def model_keypoints(landmarks: np.ndarray, visibility: np.ndarray, world: np.ndarray, inputs: str) -> np.ndarray:
    """What a model with `inputs` (model.KEYPOINT_CHANNELS) reads per frame, before per-clip normalisation, from
    MediaPipe's landmarks (T, 33, 2) pixels, visibility (T, 33) and world landmarks (T, 33, 3), NaN where it returned
    nothing: (T, 17, 3) x, y, visibility ("2d+vis"), or 1 where a pose was returned ("2d"), or (T, 17, 6) with the
    root-relative world joints after them ("2d+3d"). Frames without a pose are zeros."""
    returned = np.isfinite(landmarks).all((-1, -2))
    kp = mediapipe_to_h36m(np.nan_to_num(landmarks), np.nan_to_num(visibility))
    if inputs == "2d":
        kp[..., 2] = returned[:, None]
    elif inputs == "2d+3d":
        kp = np.concatenate([kp, np.where(returned[:, None, None], world_h36m(np.nan_to_num(world)), 0.0)], -1)
    elif inputs != "2d+vis":
        raise ValueError(f"unknown keypoint inputs {inputs!r}; choose 2d, 2d+vis or 2d+3d")
    return kp.astype(np.float32)


def normalize_clip(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixels -> the model's input space for one clip (T, 17, C): the box around all confident joints of all
    frames maps to [-1, 1] (its longer side), aspect kept; confidences and any further channels (world joints)
    pass through.

    Returns the normalised keypoints (T, 17, 3), the box centre (2,) and half-size (pixels), so that
    pixels = normalised * scale + centre.
    """
    xy, conf = keypoints[..., :2], keypoints[..., 2]
    good = conf >= MIN_CONFIDENCE
    pts = xy[good] if good.any() else xy.reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    scale = float(max((hi - lo).max() / 2, 1e-3))
    out = keypoints.copy()
    out[..., :2] = (xy - centre) / scale
    return out.astype(np.float32), centre.astype(np.float32), scale
