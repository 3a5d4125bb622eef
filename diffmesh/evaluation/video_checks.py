"""Checks of a `diffmesh run` result on a real video, without ground truth (docs/results.md reports them):

- reprojection: the model's joints, projected with the solved camera, against MediaPipe's 2D keypoints;
- jitter: mean 3D joint acceleration (mm/frame^2) of our joints against MediaPipe's own metric 3D landmarks
  (`pose_world_landmarks`) on the same frames, both hip-centred, over the twelve limb joints both have;
- agreement with a reference 3D pose (the BlazePose 3D output shipped beside the squats clip: model output,
  not ground truth): MPJPE after aligning the hip centres and PA-MPJPE, over the same twelve joints.

`python -m diffmesh.evaluation.video_checks OUTDIR [--reference blazepose_3d_world.json]` prints them as JSON.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..keypoints import H36M_FROM_MEDIAPIPE, SHARED_JOINTS
from ..metrics import acceleration, pa_mpjpe

# The twelve limb joints as MediaPipe landmark indices (each H36M limb joint is one landmark).
SHARED_LANDMARKS = tuple(H36M_FROM_MEDIAPIPE[j][0] for j in SHARED_JOINTS)
HIPS = (SHARED_JOINTS.index(1), SHARED_JOINTS.index(4))          # right and left hip among the twelve


def _hip_centred(points: np.ndarray) -> np.ndarray:
    return points - points[:, list(HIPS)].mean(1, keepdims=True)


def mean_acceleration_mm(points: np.ndarray, usable: np.ndarray) -> float:
    """Mean |second difference| of points (T, J, 3) in metres over frames t whose neighbours t-1, t, t+1 are all
    usable (T,), in mm/frame^2."""
    acc = np.linalg.norm(acceleration(points), axis=-1).mean(-1)
    ok = usable[2:] & usable[1:-1] & usable[:-2]
    return float(1000 * acc[ok].mean()) if ok.any() else float("nan")


def check_result(result: dict, reference: np.ndarray | None = None) -> dict:
    """Checks of one result.npz (as a dict of arrays); reference (T, 33, 3) metric landmarks, optional."""
    valid = result["valid"]
    same_track = np.concatenate([[True], result["track_id"][1:] == result["track_id"][:-1]])
    usable = valid & same_track                                      # no acceleration across a track switch
    ours = _hip_centred(result["joints3d"][:, list(SHARED_JOINTS)])
    mp_world = _hip_centred(result["mediapipe_world"][:, list(SHARED_LANDMARKS)])
    out = {"frames": int(len(valid)), "valid_frames": int(valid.sum()),
           "reprojection": json.loads(str(result["reprojection"])),
           "jitter_mm_per_frame2": {"diffmesh_hip_centred": mean_acceleration_mm(ours, usable),
                                    "mediapipe_world_hip_centred": mean_acceleration_mm(mp_world, usable),
                                    "diffmesh_camera_frame": mean_acceleration_mm(
                                        result["joints3d"][:, list(SHARED_JOINTS)], usable)}}
    if reference is not None:
        ref = _hip_centred(reference[:, list(SHARED_LANDMARKS)].astype(np.float64))
        n = min(len(ref), len(ours))
        sel = valid[:n]
        # Both hip-centred; MediaPipe/BlazePose world axes are the camera's (x right, y down), like ours.
        err = np.linalg.norm(ours[:n][sel] - ref[:n][sel], axis=-1).mean()
        out["reference"] = {"frames": int(sel.sum()), "mpjpe_hip_aligned_mm": float(1000 * err),
                            "pa_mpjpe_mm": float(1000 * pa_mpjpe(ours[:n][sel], ref[:n][sel]).mean()),
                            "reference_jitter_mm_per_frame2": mean_acceleration_mm(ref[:n], usable[:n])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path, help="a `diffmesh run` output folder (with result.npz)")
    p.add_argument("--reference", type=Path, default=None, help="JSON list of T x 33 x 3 metric landmarks")
    args = p.parse_args(argv)
    result = dict(np.load(args.outdir / "result.npz"))
    reference = np.array(json.loads(args.reference.read_text()), np.float64) if args.reference else None
    print(json.dumps(check_result(result, reference), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
