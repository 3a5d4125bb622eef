"""Several people per frame: MediaPipe's Tasks `PoseLandmarker` (`num_poses` > 1), offline.

mediapipe 0.10.21 ships the two networks the landmarker needs (`modules/pose_detection/pose_detection.tflite`,
`modules/pose_landmark/pose_landmark_full.tflite`, the same full model `diffmesh run` uses) but no `.task` bundle,
and a download is not possible offline. `pose_bundle` builds the bundle from the installed wheel once, into the
data cache: each network gets the input-normalisation metadata the Tasks graph reads (written with mediapipe's own
`metadata_writers`: the detector's input is (x - 127.5) / 127.5, the landmarker's x / 255, as the legacy graphs
normalise them), and both go into one aligned zip with mediapipe's `create_model_asset_bundle` under the names the
Tasks graph looks for. The wheel's files are hash-checked first, so another mediapipe build is refused with one
line instead of giving different poses.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..keypoints import NUM_MP_LANDMARKS
from ..paths import cache_root
from ..quiet import native_stderr_silenced

BUNDLE_VERSION = 1
# sha256 of the networks in mediapipe 0.10.21's wheel.
WHEEL_MODELS = {
    "pose_detector.tflite": ("modules/pose_detection/pose_detection.tflite",
                             "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", 127.5, 127.5, 2),
    "pose_landmarks_detector.tflite": ("modules/pose_landmark/pose_landmark_full.tflite",
                                       "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 0.0, 255.0,
                                       5),
}


def _with_metadata(model: bytes, mean: float, std: float, outputs: int) -> bytes:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model)).add_image_input([mean], [std])
    for _ in range(outputs):
        writer.add_feature_output()
    return bytes(writer.populate()[0])


def pose_bundle(cache: str | Path | None = None) -> Path:
    """The PoseLandmarker bundle built from the installed mediapipe wheel (once; then read from the cache)."""
    import mediapipe

    folder = Path(cache) if cache else cache_root() / "mediapipe"
    path = folder / f"pose_landmarker_full_v{BUNDLE_VERSION}_{mediapipe.__version__}.task"
    if path.is_file():
        return path
    root = Path(mediapipe.__file__).parent
    models = {}
    for name, (relative, sha256, mean, std, outputs) in WHEEL_MODELS.items():
        data = (root / relative).read_bytes() if (root / relative).is_file() else b""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DataError(f"{root / relative} is not the network mediapipe 0.10.21 ships; reinstall it with "
                            f"`pip install --force-reinstall mediapipe==0.10.21`")
        models[name] = _with_metadata(data, mean, std, outputs)
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import create_model_asset_bundle

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        create_model_asset_bundle(models, str(tmp))
        os.replace(tmp, path)                          # the bundle appears whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class People:
    """The people found in one frame, P of them: landmarks (P, 33, 2) pixels, visibility (P, 33), world (P, 33, 3)
    MediaPipe's metric landmarks (hip-centred, y down)."""

    landmarks: np.ndarray
    visibility: np.ndarray
    world: np.ndarray

    def __len__(self) -> int:
        return len(self.landmarks)


class MultiPoseEstimator:
    """PoseLandmarker in VIDEO mode: `process(rgb, time_s)` on consecutive frames returns the frame's `People`.

    With `tiles`, the landmarker also runs on overlapping squares of the frame (`tile_boxes`), each its own VIDEO
    stream: MediaPipe's detector sees the whole frame at 224 px, so on a 1920 px frame people beyond the nearest
    one are often too small for it; in a square crop they are twice as large. A person found in several crops is
    kept once (`merge_people`).

    With `follow`, each person found is followed in the next frame in a crop around where they were
    (`follow_box`) by a one-person landmarker of their own (the way MediaPipe's single-person graph follows one
    person from its last landmarks; the others followed greyed out in its view, `_others_hidden`), and the
    search for new people takes one of the boxes (the frame, its tiles) at a time in turn, each box once every
    SEARCH_SECONDS, with the followed people greyed out so that the detector looks only for others (all boxes
    on every frame while nobody is followed). Per frame that is one
    landmark network per person and at most one detector pass, instead of a detector and landmark pass per box:
    two people on a 720p frame cost about a third (docs/outputs.md, "Several people")."""

    def __init__(self, num_poses: int = 4, min_detection_confidence: float = 0.5, cache: str | Path | None = None,
                 tiles: bool = False, follow: bool = False):
        os.environ.setdefault("GLOG_minloglevel", "2")
        self._options = (pose_bundle(cache), num_poses, min_detection_confidence)
        self._tiles = tiles
        self._follow = follow
        self._landmarkers: dict[tuple, object] = {}
        self._last_ms = -1
        self._searches = 0                               # boxes searched so far (the next one is this modulo)
        self._next_search_s = -np.inf
        self._followed: list[tuple[int, tuple, np.ndarray]] = []   # (stream, crop box, landmarks) per person
        self._idle_streams: list[int] = []
        self._streams = 0

    def _landmarker(self, key: tuple, num_poses: int | None = None, video: bool = True):
        """The landmarker of one stream (a crop box, ("follow", k), or "search"), made on first use (~0.3 s
        each); `video`: VIDEO mode (follows its people between calls), else IMAGE mode (detects on every call)."""
        if key not in self._landmarkers:
            bundle, search_poses, min_detection_confidence = self._options
            num_poses = num_poses or search_poses
            with native_stderr_silenced():
                from mediapipe.tasks.python import BaseOptions
                from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

                options = PoseLandmarkerOptions(
                    base_options=BaseOptions(model_asset_path=str(bundle)),
                    running_mode=RunningMode.VIDEO if video else RunningMode.IMAGE,
                    num_poses=num_poses, min_pose_detection_confidence=min_detection_confidence,
                    min_pose_presence_confidence=0.5, min_tracking_confidence=0.5)
                self._landmarkers[key] = PoseLandmarker.create_from_options(options)
        return self._landmarkers[key]

    def _detect(self, rgb: np.ndarray, box: tuple, ms: int, stream: int | None = None) -> People:
        """The people in one crop box (x0, y0, w, h) of the frame, in frame pixels: with `follow`, by a
        follower's one-person landmarker (`stream`) or the one search landmarker (IMAGE mode: the boxes take
        turns, so none would follow its people from one call to the next); else by the box's own."""
        import mediapipe as mp

        x0, y0, w, h = box
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w]))
        if stream is not None:
            result = self._landmarker(("follow", stream), 1).detect_for_video(image, ms)
        elif self._follow:
            result = self._landmarker(("search",), video=False).detect(image)
        else:
            result = self._landmarker(box).detect_for_video(image, ms)
        P = len(result.pose_landmarks)
        lm = np.array([[(p.x * w + x0, p.y * h + y0) for p in pose] for pose in result.pose_landmarks], np.float32)
        vis = np.array([[p.visibility for p in pose] for pose in result.pose_landmarks], np.float32)
        world = np.array([[(p.x, p.y, p.z) for p in pose] for pose in result.pose_world_landmarks], np.float32)
        return People(lm.reshape(P, NUM_MP_LANDMARKS, 2), vis.reshape(P, NUM_MP_LANDMARKS),
                      world.reshape(P, NUM_MP_LANDMARKS, 3))

    def process(self, rgb: np.ndarray, time_s: float) -> People:
        h, w = rgb.shape[:2]
        ms = max(int(round(time_s * 1000)), self._last_ms + 1)      # VIDEO mode needs increasing timestamps
        self._last_ms = ms
        boxes = [(0, 0, w, h)] + (tile_boxes(w, h) if self._tiles else [])
        if not self._follow:
            found = [(self._detect(rgb, box, ms), box) for box in boxes]
            return merge_people(found, (w, h)) if self._tiles else found[0][0]
        whole = (0, 0, w, h)        # a follower's crop moves with its person: their detections are never "cut"
        followed = [(self._detect(self._others_hidden(rgb, k), box, ms, stream), stream)
                    for k, (stream, box, _) in enumerate(self._followed)]
        found = [(people, whole) for people, _ in followed]
        search = boxes                                  # nobody followed: every box, every frame
        if self._followed:
            search = []
            if time_s >= self._next_search_s:
                self._next_search_s = time_s + SEARCH_SECONDS / len(boxes)
                search = [boxes[self._searches % len(boxes)]]
                rgb = _greyed(rgb, [p.landmarks[0] for p, _ in followed if len(p)])
        self._searches += len(search)
        people = merge_people(found + [(self._detect(rgb, box, ms), box) for box in search], (w, h))
        self._follow_next(people, followed, (w, h))
        return people

    def _others_hidden(self, rgb: np.ndarray, k: int) -> np.ndarray:
        """The frame as follower k sees it: the others followed greyed out where they were in the last frame,
        outside k's own person's box. A follower's crop often holds a second person (two people overlapping
        along the line of sight), and its one-person landmarker would jump to them: on the Pose2Sim demo's cam03
        one track then held both people; with the others hidden neither view has an identity switch."""
        if len(self._followed) < 2:
            return rgb
        others = [landmarks for j, (_, _, landmarks) in enumerate(self._followed) if j != k]
        return _greyed(rgb, others, keep=self._followed[k][2])

    def _follow_next(self, people: People, followed: list[tuple[People, int]], frame: tuple[int, int]) -> None:
        """Who is followed in the next frame, and in which crop: each person of this frame (at most num_poses,
        the tallest first) keeps the stream that found them, or gets a free one; a stream whose person is gone,
        or that found the same person as another, is freed (a free stream re-detects in its next crop)."""
        heights = [float(np.ptp(_box(people.landmarks[d], people.visibility[d])[1::2])) for d in range(len(people))]
        order = sorted(range(len(people)), key=lambda d: -heights[d])[:self._options[1]]
        free = [stream for _, stream in followed]
        streams = {}
        for d in order:
            mine = next((stream for p, stream in followed if stream in free and len(p)
                         and same_person(p.landmarks[0], people.landmarks[d], p.visibility[0], people.visibility[d])),
                        None)
            if mine is not None:
                free.remove(mine)
                streams[d] = mine
        self._idle_streams += free
        self._followed = [(streams[d] if d in streams else self._new_stream(),
                           follow_box(people.landmarks[d], frame), people.landmarks[d]) for d in order]

    def _new_stream(self) -> int:
        if self._idle_streams:
            return self._idle_streams.pop(0)
        self._streams += 1
        return self._streams - 1

    def close(self) -> None:
        for landmarker in self._landmarkers.values():
            landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


SEARCH_SECONDS = 0.25    # with people followed, each search box is looked at once in this time
FOLLOW_SCALE = 1.6       # a follower's crop: this many times the larger side of the box of all their landmarks
FOLLOW_MIN_PX = 96       # and at least this many pixels


def follow_box(landmarks: np.ndarray, frame: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop (x0, y0, w, h) in which a person is looked for in the next frame: a square of FOLLOW_SCALE times
    the larger side of the box of all their landmarks (MediaPipe places the hidden ones too; a box of the
    confident ones only shrinks with each frame the crop cuts a limb off) around its centre, moved inside the
    frame, cut to it where larger."""
    width, height = frame
    box = np.concatenate([landmarks.min(0), landmarks.max(0)])     # all 33: a hidden limb is still the person's
    centre = (box[:2] + box[2:]) / 2
    side = max(FOLLOW_SCALE * float(np.max(box[2:] - box[:2])), FOLLOW_MIN_PX)
    w, h = int(min(round(side), width)), int(min(round(side), height))
    x0 = int(np.clip(round(centre[0] - w / 2), 0, width - w))
    y0 = int(np.clip(round(centre[1] - h / 2), 0, height - h))
    return x0, y0, w, h


def _greyed(rgb: np.ndarray, people: list[np.ndarray], keep: np.ndarray | None = None) -> np.ndarray:
    """A copy of the frame with each person's box of all landmarks (P of them, (33, 2) each), a tenth larger,
    filled with mid grey: the search looks for the others only. With `keep` (a followed person's landmarks), their
    own box is left as it was, so that where the others overlap them they are still seen whole."""
    out = rgb.copy()
    for landmarks in people:
        x0, y0, x1, y1 = _padded_box(landmarks, rgb.shape)
        out[y0:y1, x0:x1] = 128
    if keep is not None:
        x0, y0, x1, y1 = _padded_box(keep, rgb.shape)
        out[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    return out


def _padded_box(landmarks: np.ndarray, shape: tuple) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of all landmarks (33, 2), a tenth larger, inside an image of `shape`."""
    height, width = shape[:2]
    lo, hi = landmarks.min(0), landmarks.max(0)
    pad = 0.05 * (hi - lo)
    x0, y0 = np.clip(np.floor(lo - pad), 0, [width, height]).astype(int)
    x1, y1 = np.clip(np.ceil(hi + pad), 0, [width, height]).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def tile_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Squares (x0, y0, w, h) of the frame's short side along its long side, each overlapping the next by half
    (so a person narrower than half the short side lies whole in one of them); none for a square frame."""
    short, long = min(width, height), max(width, height)
    if long < 1.25 * short:
        return []
    n = int(np.ceil(2 * long / short - 1))
    offsets = np.linspace(0, long - short, n).round().astype(int)
    return [(int(o), 0, short, short) if width > height else (0, int(o), short, short) for o in offsets]


CUT_MARGIN = 0.02        # a crop's detection this close to an edge the crop shares with the rest of the frame: cut


def _inner_margin(landmarks: np.ndarray, visibility: np.ndarray, box: tuple, frame: tuple[int, int]) -> float:
    """How far inside its crop a detection lies, as a fraction of the crop: the smallest distance of its
    confident landmarks to a crop edge that is not the frame's own border (there a person is cut by the frame,
    not by the crop). Negative where MediaPipe placed landmarks beyond the crop; inf for the whole frame."""
    x0, y0, w, h = box
    width, height = frame
    sure = visibility >= 0.5
    pts = landmarks[sure] if sure.any() else landmarks
    gaps = [((pts[:, 0] - x0).min() / w, x0 > 0), ((x0 + w - pts[:, 0]).min() / w, x0 + w < width),
            ((pts[:, 1] - y0).min() / h, y0 > 0), ((y0 + h - pts[:, 1]).min() / h, y0 + h < height)]
    return float(min([g for g, inner in gaps if inner], default=np.inf))


def _box(landmarks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    sure = visibility >= 0.5
    pts = landmarks[sure] if sure.sum() >= 3 else landmarks
    return np.concatenate([pts.min(0), pts.max(0)])


def same_person(a: np.ndarray, b: np.ndarray, vis_a: np.ndarray, vis_b: np.ndarray) -> bool:
    """Two detections (33, 2) of one frame are one person: at least a fifth of the landmarks both see lie within
    a tenth of the person's height of each other. Not all of them, nor their boxes: a crop that sees a person
    partly, or another crop's landmarker, places some limbs elsewhere but the face and torso where they are,
    while two people, even overlapping in the image, share almost no landmark positions (0-14 % on the Pose2Sim
    demo, against 46-100 % for two detections of one person)."""
    sure = (vis_a >= 0.5) & (vis_b >= 0.5)
    sure = sure if sure.sum() >= 3 else np.ones_like(sure)
    height = max(np.ptp(a[sure, 1]), np.ptp(b[sure, 1]), 1.0)
    close = np.linalg.norm(a[sure] - b[sure], axis=-1) < 0.1 * height
    return bool(close.mean() >= 0.2)


def merge_people(found: list[tuple[People, tuple]], frame: tuple[int, int]) -> People:
    """The people of one frame (width, height) from the detections of several crops: those a crop cut off
    dropped, then each person once, from the detection that spans the most of them (the tallest box of confident
    landmarks: a crop that sees a person partly returns a shorter pose, not always with landmarks at its edge)."""
    candidates = [(float(np.ptp(_box(p.landmarks[d], p.visibility[d])[1::2])), p, d)
                  for p, box in found for d in range(len(p))
                  if _inner_margin(p.landmarks[d], p.visibility[d], box, frame) >= CUT_MARGIN]
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[People, int]] = []
    for _, p, d in candidates:
        if not any(same_person(p.landmarks[d], q.landmarks[e], p.visibility[d], q.visibility[e]) for q, e in kept):
            kept.append((p, d))
    if not kept:
        return found[0][0]
    return People(np.stack([p.landmarks[d] for p, d in kept]), np.stack([p.visibility[d] for p, d in kept]),
                  np.stack([p.world[d] for p, d in kept]))


def detect_frames(video: str | Path, num_poses: int = 4, cache: str | Path | None = None, tiles: bool = False,
                  total: int | None = None, progress: bool = False, probe=None, follow: bool = False,
                  first: int = 0, stop: int | None = None) -> tuple[list[People], np.ndarray]:
    """PoseLandmarker on frames [first, stop) of a video (and its tiles, see `MultiPoseEstimator`): one `People`
    per frame and the frames' timestamps (T,) in seconds; `probe` (a `camera_motion.MotionProbe`) sees the
    frames too."""
    from tqdm import tqdm

    from .decode import iter_frames

    frames, times = [], []
    with MultiPoseEstimator(num_poses, cache=cache, tiles=tiles, follow=follow) as estimator:
        for frame in tqdm(iter_frames(video, max_frames=stop, first=first), total=total, desc="people",
                          unit="frame", disable=not progress, leave=False):
            frames.append(estimator.process(frame.rgb, frame.time_s))
            times.append(frame.time_s)
            if probe is not None:
                probe.add(frame.index, frame.time_s, frame.rgb)
    return frames, np.asarray(times, np.float64)


def people_frames_to_file(video: str, first: int, out: str, warmup: int = 0) -> None:
    """`detect_frames` as `diffmesh run` uses it (tiles, people followed) on frames [first, end), written to the
    npz `out` with the camera-motion thumbnails (the keypoint worker's job, `detect.worker_main`). It starts
    `warmup` frames earlier, so that the people are followed by `first`, and drops those frames."""
    from .camera_motion import MotionProbe, Thumbnails

    probe = MotionProbe()
    start = max(first - warmup, 0)
    frames, times = detect_frames(video, tiles=True, follow=True, probe=probe, first=start)
    frames, times = frames[first - start:], times[first - start:]
    thumbs = probe.thumbnails()
    mine = thumbs.frames >= first
    thumbs = Thumbnails(thumbs.frames[mine], thumbs.images[mine], thumbs.scale)
    counts = np.array([len(p) for p in frames], np.int64)
    stacked = {k: np.concatenate([getattr(p, k) for p in frames] or [np.zeros((0,) + shape, np.float32)])
               for k, shape in (("landmarks", (NUM_MP_LANDMARKS, 2)), ("visibility", (NUM_MP_LANDMARKS,)),
                                ("world", (NUM_MP_LANDMARKS, 3)))}
    np.savez(out, times=times, counts=counts, **stacked, **thumbs.arrays())


def read_people_file(path) -> tuple[list[People], np.ndarray, object]:
    """What `people_frames_to_file` wrote: one `People` per frame, the timestamps and the thumbnails."""
    from .camera_motion import Thumbnails

    with np.load(path) as f:
        ends = np.cumsum(f["counts"])
        starts = ends - f["counts"]
        frames = [People(f["landmarks"][a:b], f["visibility"][a:b], f["world"][a:b]) for a, b in zip(starts, ends)]
        return frames, f["times"], Thumbnails.from_arrays(f)


def detect_people(video: str | Path, num_poses: int = 4, cache: str | Path | None = None,
                  tiles: bool = False, follow: bool = False) -> list[People]:
    """`detect_frames` without the timestamps."""
    return detect_frames(video, num_poses, cache, tiles, follow=follow)[0]
