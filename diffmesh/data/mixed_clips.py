"""Training batches drawn from two sources at once: the rendered MediaPipe set (`render_clips.py`: MediaPipe's real
errors, a few cameras per sequence) and the synthetic clips of the same fits (`synthetic.py`: a new camera for
every clip, the noise model), a fixed share of every batch synthetic (`diffmesh train --data renders
--synthetic-share S`).

Why both: the render set has the detector's true errors but only the cameras it was rendered from (2-4 per
sequence); the synthetic clips see the motions from any camera, with errors that are only modelled. Mixing them
is the issue-14 recipe's "synthetic noise model as augmentation".

The synthetic clips are made to read like the render clips for every input mode (`model.KEYPOINT_CHANNELS`):
- "2d+vis": the noise model's confidences stand for MediaPipe's visibility (as in the shipped checkpoints);
- "2d": confidence 1 for every joint, as `keypoints.model_keypoints` gives a frame with a pose;
- "2d+3d": no noise model makes MediaPipe's world landmarks, so a synthetic clip gets the truth (root-relative
  joints in camera axes) plus MediaPipe's real 3D error from a random window of the render set (`WorldErrors`):
  MediaPipe's world joints minus the truth of the same frames, in camera axes. MediaPipe's world frame is the
  camera's to within 4-5 degrees (measured on the renders), so the error moves over as it is. Its size and time
  structure (slow drift, jumps) are MediaPipe's; its dependence on the pose is lost, which is why the render clips
  stay the main source.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..body.base import H36M_FLIP
from ..keypoints import world_h36m
from ..losses import Targets
from .synthetic import stack_clips


class WorldErrors:
    """MediaPipe's 3D errors on the render set: per frame (17, 3) metres, world joints (`keypoints.world_h36m`)
    minus the true root-relative joints, camera axes; only windows of `num_frames` frames that all have a pose."""

    def __init__(self, files: list, num_frames: int):
        errors, starts, offset = [], [], 0
        for d in files:
            returned = np.asarray(d["mp_returned"], bool)
            truth = np.asarray(d["joints_cam"], np.float32)
            error = world_h36m(np.nan_to_num(np.asarray(d["mp_world"], np.float32))) - (truth - truth[:, :1])
            run = np.convolve(returned, np.ones(num_frames), "valid") == num_frames   # windows with a pose throughout
            starts.append(offset + np.flatnonzero(run))
            errors.append(error.astype(np.float32))
            offset += len(returned)
        self.num_frames = num_frames
        self.errors = np.concatenate(errors) if errors else np.zeros((0, 17, 3), np.float32)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if len(self.starts) == 0:
            raise ValueError(f"the render set has no {num_frames}-frame window in which MediaPipe found the body")

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One window's errors (f, 17, 3), mirrored (left/right swapped, X negated) half the time."""
        s = int(rng.choice(self.starts))
        e = self.errors[s:s + self.num_frames]
        if rng.random() < 0.5:
            e = e[:, list(H36M_FLIP)] * np.array([-1.0, 1.0, 1.0], np.float32)
        return e


def synthetic_inputs(inputs: np.ndarray, joints3d: np.ndarray, channels: str, world_errors: WorldErrors | None,
                     rng: np.random.Generator) -> np.ndarray:
    """A synthetic clip's inputs (f, 17, 3) made into what a model with `channels` reads (module docstring);
    `joints3d` (f, 17, 3) the clip's true root-relative camera-axes joints."""
    if channels == "2d+vis":
        return inputs
    if channels == "2d":
        out = inputs.copy()
        out[..., 2] = 1.0
        return out
    if channels == "2d+3d":
        if world_errors is None:
            raise ValueError("2d+3d synthetic clips need the render set's world errors")
        return np.concatenate([inputs, joints3d + world_errors.draw(rng)], -1).astype(np.float32)
    raise ValueError(f"unknown keypoint inputs {channels!r}; choose 2d, 2d+vis or 2d+3d")


@dataclass
class MixedSampler:
    """Random training batches: round(share x batch) synthetic clips (`synthetic`, a ClipMaker, at
    `synthetic_starts`), the rest render clips (`renders`, a RenderClipMaker, at `render_starts`)."""

    renders: object
    render_starts: np.ndarray
    synthetic: object
    synthetic_starts: np.ndarray
    share: float
    channels: str
    world_errors: WorldErrors | None = None

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the synthetic share must be between 0 and 1, got {self.share}")

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, Targets]:
        n_syn = int(round(self.share * batch_size))
        made = [self.renders.make(int(s), rng) for s in rng.choice(self.render_starts, batch_size - n_syn)]
        for s in rng.choice(self.synthetic_starts, n_syn):
            x, t = self.synthetic.make(int(s), rng)
            made.append((synthetic_inputs(x, t["joints3d"], self.channels, self.world_errors, rng), t))
        return stack_clips(made)
