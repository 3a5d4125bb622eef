"""Does the camera move? The world frame (`world.py`) is only right for a static camera, so a run measures how far
the background drifts and keeps its outputs in the camera frame, with a warning, when the view has moved.

While the keypoints are found, `MotionProbe` keeps a small grey thumbnail about every 0.1 s (a few hundred bytes
and ~0.1 ms a frame). `camera_drift` then tracks corners of the background (people's boxes masked out) from each
thumbnail to the next with OpenCV's pyramidal Lucas-Kanade flow, fits the similarity (shift, rotation, zoom) that
most of them agree on (RANSAC, so a walker who is not masked does not count), chains those, and reports the
largest displacement of the view from the first frame, as a fraction of the image width. A hand-held camera that
is held still shakes by about a percent; a pan or a walk with the camera moves the view by tens of percent."""

from dataclasses import dataclass

import cv2
import numpy as np

SAMPLE_S = 0.1             # one thumbnail per this many seconds of video
THUMB_WIDTH = 192          # pixels; enough corners for the flow, cheap to keep for long videos
MOVING_DRIFT = 0.05        # the view moved by more than 5 % of the image width: not a static camera
MIN_CORNERS = 12           # fewer background corners than this: no verdict for that step (a blank wall)
PERSON_MARGIN = 0.15       # people's boxes grown by this share of their size before they are masked


@dataclass
class Thumbnails:
    """Grey thumbnails (n, h, w) uint8 and the video frames they were taken from (n,); `scale` = thumbnail width /
    frame width."""

    frames: np.ndarray
    images: np.ndarray
    scale: float

    def arrays(self) -> dict[str, np.ndarray]:
        """The thumbnails as npz entries (a keypoint worker's file); `from_arrays` reads them back."""
        return {"thumb_frames": self.frames, "thumb_images": self.images, "thumb_scale": np.float64(self.scale)}

    @staticmethod
    def from_arrays(f) -> "Thumbnails":
        return Thumbnails(f["thumb_frames"], f["thumb_images"], float(f["thumb_scale"]))

    @staticmethod
    def concatenate(parts: list["Thumbnails"]) -> "Thumbnails":
        parts = [p for p in parts if len(p.frames)]
        if not parts:
            return Thumbnails(np.zeros(0, np.int64), np.zeros((0, 1, 1), np.uint8), 1.0)
        return Thumbnails(np.concatenate([p.frames for p in parts]), np.concatenate([p.images for p in parts]),
                          parts[0].scale)


class MotionProbe:
    """Call `add(index, time_s, rgb)` on the frames of a decoding pass; `thumbnails()` afterwards."""

    def __init__(self):
        self._frames, self._images, self._next_s, self._scale = [], [], -np.inf, 1.0

    def add(self, index: int, time_s: float, rgb: np.ndarray) -> None:
        if time_s < self._next_s:
            return
        self._next_s = time_s + SAMPLE_S * 0.999                  # tolerate timestamps' rounding
        h, w = rgb.shape[:2]
        self._scale = THUMB_WIDTH / w
        stride = max(1, w // (2 * THUMB_WIDTH))             # every n-th pixel first: resizing 720p costs 5x more
        grey = cv2.cvtColor(np.ascontiguousarray(rgb[::stride, ::stride]), cv2.COLOR_RGB2GRAY)
        self._frames.append(index)
        self._images.append(cv2.resize(grey, (THUMB_WIDTH, max(1, round(h * self._scale))),
                                       interpolation=cv2.INTER_AREA))

    def extend(self, thumbs: Thumbnails) -> None:
        """Thumbnails another process took of later frames (`video/detect.py`'s worker)."""
        self._frames.extend(thumbs.frames.tolist())
        self._images.extend(list(thumbs.images))
        self._scale = thumbs.scale if len(thumbs.frames) else self._scale

    def thumbnails(self) -> Thumbnails:
        if not self._frames:
            return Thumbnails.concatenate([])
        return Thumbnails(np.asarray(self._frames, np.int64), np.stack(self._images), self._scale)


def _background_mask(shape: tuple[int, int], boxes: list[np.ndarray]) -> np.ndarray:
    mask = np.full(shape, 255, np.uint8)
    for lo, hi in boxes:
        grow = (hi - lo) * PERSON_MARGIN
        x0, y0 = np.floor(lo - grow).astype(int)
        x1, y1 = np.ceil(hi + grow).astype(int)
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 0
    return mask


def _step(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The 2x3 similarity taking background points of thumbnail a to b, or None without enough evidence."""
    corners = cv2.goodFeaturesToTrack(a, maxCorners=100, qualityLevel=0.01, minDistance=5, mask=mask)
    if corners is None or len(corners) < MIN_CORNERS:
        return None
    moved, found, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, winSize=(13, 13), maxLevel=2)
    found = found.ravel() == 1
    if found.sum() < MIN_CORNERS:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(corners[found], moved[found], method=cv2.RANSAC,
                                                  ransacReprojThreshold=1.0)
    if matrix is None or inliers.sum() < MIN_CORNERS:
        return None
    return matrix


def person_boxes(landmarks: list[np.ndarray], frame: int, scale: float) -> list[np.ndarray]:
    """Every person's landmark box (lo, hi) in thumbnail pixels at a frame, from (T, 33, 2) pixel tracks."""
    out = []
    for track in landmarks:
        points = track[frame][np.isfinite(track[frame, :, 0])] * scale
        if len(points):
            out.append((points.min(0), points.max(0)))
    return out


def camera_drift(thumbs: Thumbnails, landmarks: list[np.ndarray]) -> float:
    """The largest displacement of the view from the first thumbnail's (the image's corners and centre moved by
    the chained background motion), as a fraction of the image width; 0.0 when nothing could be measured.
    `landmarks`: every person's (T, 33, 2) pixel track, masked out of the background."""
    if len(thumbs.frames) < 2:
        return 0.0
    h, w = thumbs.images.shape[1:]
    probes = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], np.float64)
    total, drift = np.eye(3), 0.0
    for (fa, a), b in zip(zip(thumbs.frames[:-1], thumbs.images[:-1]), thumbs.images[1:]):
        step = _step(a, b, _background_mask((h, w), person_boxes(landmarks, fa, thumbs.scale)))
        if step is None:
            continue                            # this step is unknown: assume the view held still
        total = np.vstack([step, [0, 0, 1]]) @ total
        moved = probes @ total[:2, :2].T + total[:2, 2]
        drift = max(drift, float(np.linalg.norm(moved - probes, axis=1).mean() / w))
    return drift
