"""`diffmesh eval-video --people`: every person of the Pose2Sim multi-person demo through `diffmesh run
--max-people 0`, view by view, against the multi-view reference (issue 15's per-view targets).

Per view and reference person:
- coverage: of the frames where the person is complete in the reference and projected inside the image, the
  share in which some track's keypoints lie on them (`real_video.assign_people`'s rule); identity switches: how
  often the track covering them changes over those frames;
- their body: in each covered frame the covering track's (the first, where two cover them) joints, scored like
  the single-person benchmark (`real_video.score_sequence`: PA-MPJPE, ACC-ERR against the smoothed reference);
- beside it the single-person run's figure for the same person (the benchmark's `score_view`), where the
  single-person tracker follows them long enough to be scored.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import DiffMeshError
from ..paths import DEFAULT_CHECKPOINT
from ..pipeline import RunSettings, run_video
from ..result import load_people
from .multiview_reference import Reference, demo_references
from .real_video import assign_people, score_sequence, score_view

MIN_SCORED = 10       # frames a person needs for a sequence alignment and accelerations (as in `score_view`)


def visible_frames(ref: Reference, view: int, width: int, height: int, T: int) -> np.ndarray:
    """(T,) the reference person is complete and all their projected joints lie inside the image."""
    camera = ref.camera_models[view]
    px = camera.project(np.nan_to_num(ref.joints[:T]))
    return (np.isfinite(ref.joints[:T]).all((1, 2)) & (px >= 0).all((1, 2)) & (px[..., 0] < width).all(1)
            & (px[..., 1] < height).all(1))


def owners(people: list, refs: list[Reference], view: int, T: int) -> np.ndarray:
    """(R, T) which track (index into `people`) covers each reference person in each frame, -1 for none."""
    camera = refs[0].camera_models[view]
    px = [camera.project(np.nan_to_num(r.joints[:T])) for r in refs]
    owner = np.full((len(refs), T), -1)
    for k, person in enumerate(people):
        follows = np.where(person.valid[:T], assign_people(person.keypoints2d[:T], px), -1)
        for p in range(len(refs)):
            owner[p][(follows == p) & (owner[p] == -1)] = k
    return owner


def score_people_view(refs: list[Reference], view: int, video: Path, checkpoint: Path, workdir: Path,
                      settings: dict) -> dict:
    """One view through `diffmesh run --max-people 0` (and the single-person run): per reference person their
    coverage, switches and scores (module docstring)."""
    t0 = time.perf_counter()
    out = workdir / f"people_{video.stem}"
    run_video(video, out, RunSettings(checkpoint=str(checkpoint), render=False,
                                      exports=("npz",), progress=False, force=True, max_people=0, **settings))
    people = load_people(out / "result.npz")
    single = score_view(refs, view, video, [checkpoint], workdir, settings)
    T = min(people[0].num_frames, len(refs[0].joints))
    owner = owners(people, refs, view, T)
    found = {}
    for p, ref in enumerate(refs):
        seen = visible_frames(ref, view, *people[0].image_size, T)
        covered = seen & (owner[p] >= 0)
        ids = owner[p][covered]
        pred = np.full((T, 17, 3), np.nan)
        for k in np.unique(owner[p][owner[p] >= 0]):
            pred[owner[p] == k] = people[k].joints3d[:T][owner[p] == k]
        scored = (owner[p] >= 0) & np.isfinite(ref.joints[:T]).all((1, 2))
        alone = single.people.get(p, {}).get("methods", {})
        coverage = covered.sum() / seen.sum() if seen.any() else np.nan
        found[p] = {"visible_frames": int(seen.sum()), "coverage": float(coverage),
                    "switches": int((np.diff(ids) != 0).sum()), "tracks": [int(k) for k in np.unique(ids)],
                    "scored_frames": int(scored.sum()),
                    "per_track": score_sequence(pred, ref.joints[:T], scored) if scored.sum() >= MIN_SCORED
                    else None,
                    "single_person": next(iter(alone.values()), None),
                    "single_person_frames": single.people.get(p, {}).get("scored_frames", 0)}
    return {"view": refs[0].cameras[view], "frames": T, "tracks": len(people), "people": found,
            "seconds": time.perf_counter() - t0}


def run_eval_video_people(checkpoint: str | None = None, cache: str | None = None, workdir: str | None = None,
                          settings: dict | None = None, progress: bool = True) -> dict:
    """Every view of the demo (module docstring): a JSON-ready report."""
    if checkpoint and not Path(checkpoint).is_file():
        raise DiffMeshError(f"checkpoint {checkpoint} not found; pass a file made by `diffmesh train` or none for "
                            f"the shipped default")
    refs = demo_references(cache, progress)
    views = {}
    with tempfile.TemporaryDirectory(prefix="diffmesh-eval-people-", dir=workdir) as tmp:
        for c, name in enumerate(refs[0].cameras):
            views[name] = score_people_view(refs, c, refs[0].folder / "videos" / f"{name}.mp4",
                                            Path(checkpoint or DEFAULT_CHECKPOINT), Path(tmp), settings or {})
            if progress:
                print(f"  {name}: {views[name]['tracks']} tracks ({views[name]['seconds']:.0f} s)", flush=True)
    return {"benchmark": "pose2sim_demo_multiperson_people", "checkpoint": str(checkpoint or DEFAULT_CHECKPOINT),
            "settings": settings or {}, "fps": refs[0].fps, "views": views}


def format_people_report(report: dict, joint_set: str = "limbs12") -> str:
    """One row per view and person: coverage / switches, PA-MPJPE / ACC-ERR (smoothed reference) per track and
    in the single-person run, and their ratio."""
    def pair(s):
        return f"{s[joint_set]['pa_mpjpe']:.1f} / {s[joint_set]['acc_err_smoothed']:.1f}" if s else "-"

    lines = [f"joint set {joint_set}; PA-MPJPE mm / ACC-ERR mm/frame^2 at {report['fps']:.0f} fps against the "
             f"smoothed reference", "| view | person | coverage | switches | tracks | per track (frames) | "
             "single-person run (frames) | PA ratio |", "|---|---|---|---|---|---|---|---|"]
    for view, v in report["views"].items():
        for p, n in v["people"].items():
            ratio = (f"{n['per_track'][joint_set]['pa_mpjpe'] / n['single_person'][joint_set]['pa_mpjpe']:.2f}"
                     if n["per_track"] and n["single_person"] else "-")
            lines.append(f"| {view} | {p} | {n['coverage']:.2f} | {n['switches']} | {n['tracks']} | "
                         f"{pair(n['per_track'])} ({n['scored_frames']}) | {pair(n['single_person'])} "
                         f"({n['single_person_frames']}) | {ratio} |")
    return "\n".join(lines)
