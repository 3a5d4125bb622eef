"""`diffmesh eval --data renders --feet`: foot skating and ground penetration on the rendered test split, where the
floor and the feet's true contacts are known, before and after the contact handling (`world.settle_feet`, then
the legs locked by `world.lock_feet`).

Each render file goes through the run's steps after its keypoint stage (`renders.recover_file`), the body is placed
in the render's own pinhole camera (`pipeline.place_body`) and the world is found from its planted feet
(`world.fit_ground`) as `diffmesh run` does for one person. The contacts scored are the truth's, not the run's: a
true ankle slower than `CONTACT_SPEED_MS` and within `CONTACT_HEIGHT_M` of its standing height. Scores, frame-
weighted over the files where a world was found:

- skating: the run's world ankles' horizontal move per frame (mm, at 30 fps) over consecutive true-contact frames
  (the truth's own, the foot rolling over heel and toe, is reported beside it);
- penetration: how far the run's lower sole is below the true floor (cm; mean and 95th percentile over the frames
  with a body), the run's ankles taken into the render's world through the true camera;
- float: the mean distance of a true-contact ankle from the true floor's ankle level (cm);
- the same two on the run's own floor (what a user sees in the exported scene);
- camera height: the run's estimate against the render camera's height (m).
"""

import time
from pathlib import Path

import numpy as np

from ..body import load_body
from ..paths import DEFAULT_CHECKPOINT
from ..pipeline import Camera, RunSettings, keypoints_h36m, place_body
from ..world import ANKLES, ankle_height, fit_ground, foot_skating_mm, lock_feet, settle_feet
from .renders import load_models, recover_file, test_files

CONTACT_SPEED_MS = 0.3
CONTACT_HEIGHT_M = 0.05


def true_contacts(ankles_world: np.ndarray, standing: float, fps: float) -> np.ndarray:
    """(T, 2) bool: a true ankle (T, 2, 3) that moves slower than CONTACT_SPEED_MS (central difference) and is
    within CONTACT_HEIGHT_M of its standing height above the floor."""
    speed = np.full(ankles_world.shape[:2], np.inf)
    speed[1:-1] = np.linalg.norm(ankles_world[2:] - ankles_world[:-2], axis=-1) * fps / 2
    return (speed < CONTACT_SPEED_MS) & (ankles_world[..., 2] < standing + CONTACT_HEIGHT_M)


def in_render_world(data: dict, joints_cam: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) in the render's world (z up, the floor at z = 0)."""
    return joints_cam @ np.asarray(data["camera_R"], np.float64) + np.asarray(data["camera_position"], np.float64)


def file_feet(model, rate: float, body, data: dict, settings: RunSettings) -> dict | None:
    """One render file's foot scores before and after the contact handling; None where no world was found."""
    rotmats, shapes, presence, track = recover_file(model, rate, data, settings)
    fps, keypoints = float(data["fps"]), keypoints_h36m(track)
    camera = Camera(float(data["focal"]), tuple(np.asarray(data["principal"], float)))
    motion = place_body(body, rotmats, shapes, keypoints, presence, camera, fps)
    if not motion.valid.any():
        return None
    ankle_up = ankle_height(body, motion.shapes[motion.valid].mean(0))
    world = fit_ground([(motion.joints_cam, keypoints, motion.valid, ankle_up)], fps)
    if world is None:
        return None
    truth = np.asarray(data["joints_world"], np.float64)
    true_up = np.asarray(data["camera_R"], np.float64)[:, 2]     # world z in camera axes (`in_render_world`)
    contacts = true_contacts(truth[:, list(ANKLES)], ankle_height(body, data["shape"]), fps) & motion.valid[:, None]
    settled = settle_feet(world, motion.joints_cam, keypoints, motion.valid, ankle_up, fps)
    settled = lock_feet(world, body, motion.rotmats, motion.shapes, motion.translation, motion.valid, settled,
                        ankle_up)
    out = {"frames": int(motion.valid.sum()), "contacts": int(contacts.sum()),
           "camera_height_error_m": abs(world.camera_height_m - float(data["camera_position"][2])),
           "up_error_deg": float(np.degrees(np.arccos(np.clip(world.up @ true_up, -1.0, 1.0)))),
           "truth_skating_mm": foot_skating_mm(truth, contacts, fps)}
    after_cam = world.to_camera(settled.joints_world.astype(np.float64))
    for name, joints_world, cam in (("before", world.to_world(motion.joints_cam), motion.joints_cam),
                                    ("after", settled.joints_world, after_cam)):
        ankles = in_render_world(data, cam[:, list(ANKLES)])
        below = np.maximum(ankle_up - np.nanmin(ankles[motion.valid][..., 2], axis=1), 0.0)
        own = joints_world[:, list(ANKLES), 2].astype(np.float64)                   # on the run's own floor
        below_own = np.maximum(ankle_up - np.nanmin(own[motion.valid], axis=1), 0.0)
        out[name] = {"skating_mm": foot_skating_mm(in_render_world(data, cam), contacts, fps),
                     "penetration_cm": float(100 * below.mean()),
                     "penetration_p95_cm": float(100 * np.percentile(below, 95)),
                     "float_cm": float(100 * np.abs(ankles[..., 2] - ankle_up)[contacts].mean()),
                     "own_penetration_p95_cm": float(100 * np.percentile(below_own, 95)),
                     "own_float_cm": float(100 * np.abs(own - ankle_up)[contacts].mean())}
    return out


def _weighted(files: list[dict], key: str, weight: str) -> float:
    values = [(f[key], f[weight]) for f in files if np.isfinite(f[key]) and f[weight]]
    return float(np.average([v for v, _ in values], weights=[w for _, w in values])) if values else float("nan")


def summarise(files: list[dict]) -> dict:
    """Frame-weighted means over the files (contact-weighted for skating and float)."""
    out = {"truth_skating_mm": _weighted(files, "truth_skating_mm", "contacts"),
           "camera_height_error_m": float(np.median([f["camera_height_error_m"] for f in files])),
           "up_error_deg": float(np.median([f["up_error_deg"] for f in files]))}
    for stage in ("before", "after"):
        rows = [{**f[stage], "frames": f["frames"], "contacts": f["contacts"]} for f in files]
        out[stage] = {"skating_mm": _weighted(rows, "skating_mm", "contacts"),
                      "penetration_cm": _weighted(rows, "penetration_cm", "frames"),
                      "penetration_p95_cm": _weighted(rows, "penetration_p95_cm", "frames"),
                      "float_cm": _weighted(rows, "float_cm", "contacts"),
                      "own_penetration_p95_cm": _weighted(rows, "own_penetration_p95_cm", "frames"),
                      "own_float_cm": _weighted(rows, "own_float_cm", "contacts")}
    return out


def run_feet_eval(checkpoint: str | None = None, cache_dir=None, limit: int | None = None,
                  settings: RunSettings | None = None, split: str = "test") -> dict:
    """The report: per-stage scores of one checkpoint (the shipped default unless given) on the test split (or
    the validation subjects' renders, `split` "val", where the contact handling is tuned)."""
    t0 = time.perf_counter()
    path = Path(checkpoint or DEFAULT_CHECKPOINT)
    settings = settings or RunSettings()
    body = load_body("anny")
    (model, rate), = load_models([path], body, settings.device).values()
    files = test_files(cache_dir, limit, split)
    scored = [s for s in (file_feet(model, rate, body, data, settings) for data in files) if s is not None]
    return {"data": "renders", "split": split, "checkpoint": path.name, "files": len(files),
            "files_with_world": len(scored),
            "frames": sum(s["frames"] for s in scored), "contacts": sum(s["contacts"] for s in scored),
            **(summarise(scored) if scored else {}), "seconds": time.perf_counter() - t0}


def format_feet_report(report: dict) -> str:
    lines = [f"rendered {report['split']} split, feet: {report['files_with_world']} of {report['files']} files "
             "with a world, "
             f"{report['frames']} frames, {report['contacts']} true ankle contacts; checkpoint {report['checkpoint']}"]
    if report["files_with_world"]:
        lines += [f"camera height error (median) {report['camera_height_error_m']:.2f} m, gravity "
                  f"{report['up_error_deg']:.1f} degrees off (median); the truth's own skating "
                  f"{report['truth_skating_mm']:.1f} mm/frame",
                  "| stage | skating mm/frame | true floor: penetration cm (mean / 95th pct) | float cm | "
                  "own floor: penetration cm (95th pct) | float cm |", "|---|---|---|---|---|---|"]
        for stage in ("before", "after"):
            s = report[stage]
            lines.append(f"| {stage} contact handling | {s['skating_mm']:.1f} | {s['penetration_cm']:.1f} / "
                         f"{s['penetration_p95_cm']:.1f} | {s['float_cm']:.1f} | {s['own_penetration_p95_cm']:.1f} | "
                         f"{s['own_float_cm']:.1f} |")
    return "\n".join(lines)
