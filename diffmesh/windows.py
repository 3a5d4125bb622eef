"""Where `diffmesh run` puts the model's f-frame windows, at which rate, and how their outputs become one motion
per person. Pure numpy (scipy's `Rotation` for slerp, roma for the mean rotation); `pipeline.py` runs the model.

1. Rate. The shipped models were trained on 30 fps CMU clips (`TRAINING_FPS`; a checkpoint whose config carries
   `fps` is run at that rate, `model_rate`). `time_grid` puts one run of video frames on the model's grid from the
   frames' real timestamps, so variable-rate video works: a sample every 1/rate s from the run's first frame to
   its last (rounded up), each sample's keypoints interpolated linearly between the two frames around it
   (`rotations.interpolate`). The model's rotations come back to every video frame by slerp between the two samples around
   it (`rotations.slerp_at`). A run already on the grid (a 30 fps video) maps sample i to frame i exactly.
2. Windows (`window_starts`). "independent": disjoint f-sample windows. "blended" and "chained": windows every f/2
   samples (the last one ends at the run's last sample); each sample's rotations are cross-faded over the windows
   covering it with weight sin^2(pi (j + 1/2) / f) at window position j, which falls to ~0 at a window's edges
   (two windows f/2 apart sum to exactly 1), and averaged on SO(3): the weighted sum projected onto the nearest
   rotation (the chordal mean, `stitch`). A window that runs past the run's end (the last independent one, or the
   only window of a run shorter than f) is padded by repeating the run's last sample; padded positions carry no
   weight, so every sample takes the output of its real position.
3. One shape per person (`person_shapes`): the mean of the window shapes of one track (`Presence.track_id`), each
   window weighted by the real samples it covers.
4. `boundary_jitter`: on a result, the mean acceleration of the 17 root-relative joints at the frames whose
   acceleration spans a window boundary (within 1 frame of it) against all other frames, to compare the modes.
"""

import math
from dataclasses import dataclass

import numpy as np

from .video.presence import Presence

# The frame rate the shipped checkpoints were trained at: CMU mocap resampled to 30 fps (assets/mocap/cmu_30fps.npz,
# cut into f-frame windows by data/synthetic.py). Checkpoints carry no `fps` in their config; one that does is run
# at its own rate.
TRAINING_FPS = 30.0
WINDOW_MODES = ("independent", "blended", "chained")
DEFAULT_WINDOWS = "blended"       # the default of `diffmesh run`, eval and eval-video (docs/results.md says why)
SNAP = 1e-2       # a position within this of a whole sample (frame) is that sample (container timestamps round)


def model_rate(config: dict) -> float:
    """The frame rate (fps) a checkpoint's model expects: its config's `fps`, else `TRAINING_FPS`."""
    fps = config.get("fps")
    return float(fps) if fps else TRAINING_FPS


# ---------------------------------------------------------------- 1. the model's time grid

@dataclass
class RunGrid:
    """One run of n consecutive video frames on the model's grid of m samples: `frame_at_sample` (m,) is each
    sample's position among the run's frames (fractional, 0..n-1), `sample_at_frame` (n,) each frame's position
    among the samples (fractional, 0..m-1)."""

    frame_at_sample: np.ndarray
    sample_at_frame: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.frame_at_sample)

    @property
    def identity(self) -> bool:
        return (len(self.frame_at_sample) == len(self.sample_at_frame)
                and np.array_equal(self.sample_at_frame, np.arange(len(self.sample_at_frame))))


def _snap(pos: np.ndarray) -> np.ndarray:
    whole = np.round(pos)
    return np.where(np.abs(pos - whole) < SNAP, whole, pos)


def time_grid(times: np.ndarray, rate: float | None) -> RunGrid:
    """The grid of one run from its frames' timestamps (n,) in seconds (strictly increasing); `rate` None = no
    resampling (sample i is frame i)."""
    n = len(times)
    if rate is None or n < 2:
        index = np.arange(n, dtype=np.float64)
        return RunGrid(index, index.copy())
    t = np.asarray(times, np.float64) - float(times[0])
    if not np.all(np.diff(t) > 0):
        raise ValueError("timestamps of a run must be strictly increasing")
    m = int(math.ceil(t[-1] * rate - SNAP)) + 1
    frame_at_sample = _snap(np.interp(np.arange(m) / rate, t, np.arange(n, dtype=np.float64)))
    sample_at_frame = np.clip(_snap(t * rate), 0, m - 1)
    return RunGrid(frame_at_sample, sample_at_frame)


# ---------------------------------------------------------------- 2. windows

def window_starts(num_samples: int, f: int, mode: str) -> np.ndarray:
    """First samples of the windows of a run of `num_samples` (see the module docstring)."""
    if mode not in WINDOW_MODES:
        raise ValueError(f"windows must be one of {WINDOW_MODES}, got {mode!r}")
    if mode == "independent":
        return np.arange(0, num_samples, f)
    starts = list(range(0, max(num_samples - f, 0) + 1, max(1, f // 2)))
    if starts[-1] + f < num_samples:
        starts.append(num_samples - f)
    return np.array(starts)


def window_samples(start: int, f: int, num_samples: int) -> np.ndarray:
    """The f sample indices a window reads: start.., the tail padded with the run's last sample."""
    return np.minimum(np.arange(start, start + f), num_samples - 1)


def window_weights(f: int, mode: str) -> np.ndarray:
    """Cross-fade weight of each window position (f,): 1 for independent windows, sin^2(pi (j + 1/2) / f) else."""
    if mode == "independent":
        return np.ones(f)
    return np.sin(np.pi * (np.arange(f) + 0.5) / f) ** 2


def stitch(rotmats: np.ndarray, starts: np.ndarray, num_samples: int, weights: np.ndarray) -> np.ndarray:
    """Rotations per sample (m, K, 3, 3) from the windows' (W, f, K, 3, 3): each sample's real positions weighted
    by `weights`, their weighted sum projected onto SO(3) (`roma.special_procrustes`) where more than one window
    covers the sample; padded positions are never used."""
    import roma
    import torch

    W, f = rotmats.shape[:2]
    acc = np.zeros((num_samples,) + rotmats.shape[2:], np.float64)
    total, count = np.zeros(num_samples), np.zeros(num_samples, np.int64)
    for w, s in enumerate(starts):
        n = min(f, num_samples - s)
        acc[s:s + n] += weights[:n, None, None, None] * rotmats[w, :n]
        total[s:s + n] += weights[:n]
        count[s:s + n] += 1
    if (count == 0).any():
        raise ValueError("some samples are covered by no window")
    once = count == 1
    out = np.empty_like(acc)
    out[once] = acc[once] / total[once, None, None, None]
    if (~once).any():
        mean = torch.from_numpy(acc[~once] / total[~once, None, None, None])
        out[~once] = roma.special_procrustes(mean).numpy()
    return out.astype(rotmats.dtype)


def person_shapes(shapes: np.ndarray, real_samples: np.ndarray, tracks: np.ndarray) -> dict[int, np.ndarray]:
    """One shape per track: the mean of its windows' shapes (W, S) weighted by the real samples (W,) each covers."""
    out = {}
    for track in np.unique(tracks):
        sel = tracks == track
        w = real_samples[sel].astype(np.float64)
        out[int(track)] = (w[:, None] * shapes[sel]).sum(0) / w.sum()
    return out


# ---------------------------------------------------------------- the plan of a video

@dataclass
class RunPlan:
    """One run of valid frames [start, stop) of one track: its grid on the model's rate and its windows' first
    samples."""

    start: int
    stop: int
    track: int
    grid: RunGrid
    starts: np.ndarray

    def boundaries(self, f: int) -> np.ndarray:
        """Sample positions b where a window begins or ends inside the run (between samples b-1 and b)."""
        m = self.grid.num_samples
        edges = set(int(s) for s in self.starts[1:]) | set(int(s) + f for s in self.starts if s + f < m)
        return np.array(sorted(edges), np.int64)


def run_times(times: np.ndarray, fps: float) -> np.ndarray:
    """A run's timestamps as the grid needs them: the container's, or frame / fps where they do not increase."""
    times = np.asarray(times, np.float64)
    if len(times) > 1 and not (np.isfinite(times).all() and np.all(np.diff(times) > 0)):
        return np.arange(len(times)) / fps
    return times


def plan_runs(presence: Presence, times: np.ndarray, fps: float, f: int, rate: float | None,
              mode: str) -> list[RunPlan]:
    """Every run of `presence` on the model's grid (`rate` None: no resampling) with its windows."""
    plans = []
    for start, stop in presence.runs():
        grid = time_grid(run_times(times[start:stop], fps), rate)
        plans.append(RunPlan(start, stop, int(presence.track_id[start]), grid,
                             window_starts(grid.num_samples, f, mode)))
    return plans


# ---------------------------------------------------------------- 4. jitter at window boundaries

def jitter_at_boundaries(joints: np.ndarray, plans: list[RunPlan], f: int) -> dict[str, float]:
    """Mean acceleration norm (mm/frame^2) of the 17 joints (T, 17, 3) in metres, root-relative, at the frames whose
    acceleration (frames t-1, t, t+1 of one run) spans a window boundary, i.e. within 1 frame of it, and at all
    other frames of the runs."""
    at, inside = [], []
    for plan in plans:
        rel = joints[plan.start:plan.stop] - joints[plan.start:plan.stop, :1]
        n = len(rel)
        if n < 3:
            continue
        accel = 1000 * np.linalg.norm(rel[2:] - 2 * rel[1:-1] + rel[:-2], axis=-1).mean(-1)   # frames 1..n-2
        b = plan.boundaries(f)
        fas = plan.grid.frame_at_sample
        pos = (fas[b - 1] + fas[b]) / 2 if len(b) else np.zeros(0)       # between the two samples, in frames
        frames = np.arange(1, n - 1)
        near = (np.abs(frames[:, None] - pos[None]) < 1).any(1) if len(pos) else np.zeros(len(frames), bool)
        at.append(accel[near])
        inside.append(accel[~near])
    at, inside = np.concatenate(at or [np.zeros(0)]), np.concatenate(inside or [np.zeros(0)])
    mean = lambda a: float(a.mean()) if len(a) else float("nan")     # noqa: E731
    ratio = mean(at) / mean(inside) if len(inside) and mean(inside) > 0 else float("nan")
    return {"boundary": mean(at), "inside": mean(inside), "ratio": ratio, "boundary_frames": int(len(at)),
            "inside_frames": int(len(inside))}


def boundary_jitter(result, mode: str, num_frames: int = 16, rate: float | None = TRAINING_FPS) -> dict[str, float]:
    """`jitter_at_boundaries` on a `Result` (or its result.npz path) at the window boundaries that `mode` puts in
    it (the run's windows as `diffmesh run` with `--windows mode` lays them out: pass the mode the result was made
    with, or "independent" to measure every result at the same cuts); `rate` None for `--no-resample` results."""
    from .result import Result

    if not isinstance(result, Result):
        result = Result.load(result)
    valid = np.asarray(result.valid, bool)
    presence = Presence(valid, np.asarray(result.track_id), np.where(valid, "ok", "none"), np.ones(len(valid)))
    plans = plan_runs(presence, np.asarray(result.timestamps), result.fps, num_frames, rate, mode)
    return jitter_at_boundaries(np.asarray(result.joints3d, np.float64), plans, num_frames)
