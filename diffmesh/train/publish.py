"""Copy trained runs into the package as the shipped weights, with their record (`python -m
diffmesh.train.publish RUN_DIR...`, run by `make weights`).

For each run's best.pt it writes `<method>_tiny_anny.pt` in diffmesh/weights/ (`paths.WEIGHTS_DIR`).
`record.json` there records, for each of them:
- the training command and settings, the data (mocap md5, fit error) and the validation history;
- the scores on the whole synthetic CMU test split, and on a fixed 48-clip subset of it, which
  `tests/test_weights.py` recomputes (models that read 2D only: the split has no MediaPipe 3D);
- the scores on the rendered test split (`diffmesh eval`, when the renders are on the machine);
- the real-video benchmark (`diffmesh eval-video`), which `tests/test_real_video.py` recomputes for every
  shipped model;
- `--seeds RUN...`: the other seeds of the same recipe (not shipped), each with its command, validation and
  real-video figures, so the spread over seeds that docs/results.md quotes is on record.
With `--update` the record's other models (and seeds) are kept, so one retrained model can be shipped beside the
others.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from ..checkpoint import read_checkpoint
from ..errors import DataError
from ..paths import WEIGHTS_DIR

CHECK_SUBSET_CLIPS = 48
RECORD = WEIGHTS_DIR / "record.json"


def shipped_name(method: str, preset: str = "tiny") -> str:
    return f"{method}_{preset}_anny.pt"


def train_command(settings: dict) -> str:
    return ("diffmesh train " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(settings[k]))}"
        for k in ("preset", "method", "epochs", "steps_per_epoch", "batch_size", "lr", "seed", "val_clips",
                  "noise_model", "motion_form", "aux", "camera_model", "data", "keypoint_inputs", "synthetic_share",
                  "shape_std", "anchor") if k in settings   # older runs lack some
    ) + ("" if settings.get("noise", True) else " --no-noise") + " --threads 1")


def _ship_run(run: Path) -> tuple[str, dict]:
    """Copy one run's best.pt into the package (atomically) and return its name and record entry."""
    payload = read_checkpoint(run / "best.pt")
    settings = payload["settings"]
    history = json.loads(read_checkpoint(run / "last.pt")["history"])
    name = shipped_name(settings["method"], settings["preset"])
    tmp = WEIGHTS_DIR / f".{name}.tmp"
    torch.save({k: payload[k] for k in ("format_version", "config", "model", "settings", "step", "epoch", "val")}, tmp)
    os.replace(tmp, WEIGHTS_DIR / name)
    return name, {"method": settings["method"], "command": train_command(settings), "settings": settings,
                  "best_epoch": payload["epoch"], "best_step": payload["step"], "val_at_best": payload["val"],
                  "history": history, "train_minutes": history[-1]["seconds"] / 60 if history else None}


def reads_synthetic(path: Path) -> bool:
    """Whether a checkpoint can be scored on the synthetic split (it has no MediaPipe 3D for 2d+3d models)."""
    config = read_checkpoint(path).get("config", {})
    return config.get("keypoint_inputs", "2d+vis") != "2d+3d"


def _real_video_summary(report: dict) -> dict:
    """What the record keeps of `diffmesh eval-video`: per view and in the mean, every method's figures."""
    return {"version": report["version"], "mean": report["mean"],
            "views": {v: {"coverage": d["coverage"], "methods": d["methods"]} for v, d in report["views"].items()}}


def _render_scores(paths: list[Path], limit: int | None) -> dict:
    from ..evaluation.renders import run_render_eval

    try:
        return run_render_eval([str(p) for p in paths], limit=limit)
    except DataError as e:                           # no renders here: say so instead of keeping stale figures
        return {"missing": str(e)}


def _seed_entry(run: Path, render_limit: int | None) -> dict:
    """A run of the shipped recipe kept as a seed, not shipped: what it is and how it scores on real video and
    on the rendered test split."""
    from ..evaluation.real_video import run_eval_video

    payload = read_checkpoint(run / "best.pt")
    settings = payload["settings"]
    return {"method": settings["method"], "seed": settings["seed"], "command": train_command(settings),
            "best_epoch": payload["epoch"], "val_at_best": payload["val"],
            "real_video": _real_video_summary(run_eval_video([str(run / "best.pt")], progress=False)),
            "renders": _render_scores([run / "best.pt"], render_limit)}


def _score_synthetic(record: dict, paths: list[Path]) -> None:
    """The synthetic CMU split and its check subset, for the shipped models that can read it."""
    from ..evaluation.cmu import run_eval

    synthetic = [p for p in paths if reads_synthetic(p)]
    if not synthetic:                                # run_eval would fall back to every shipped model
        why = {"missing": "no shipped model reads the synthetic split (they read MediaPipe's 3D, which it lacks)"}
        record["test"], record["check_subset"] = why, why
        return
    record["test"] = run_eval(synthetic)
    record["check_subset"] = run_eval(synthetic, limit=CHECK_SUBSET_CLIPS, with_vertices=False)


def publish(run_dirs: list[Path], update: bool = False, seed_runs: list[Path] = (),
            render_limit: int | None = None) -> dict:
    """Ship the runs and re-score every shipped model: the synthetic split (models that read it), the rendered
    test split (`render_limit` evenly spaced files of it, or all) when its renders are on this machine, and the
    real-video benchmark; record `seed_runs` beside them. With `update`, the record's other models and seeds
    are kept (their runs need not be here)."""
    from ..data.prepare import default_cache_dir
    from ..evaluation.real_video import run_eval_video

    record = json.loads(RECORD.read_text()) if update and RECORD.exists() else {"models": {}}
    for run in run_dirs:
        name, entry = _ship_run(run)
        record["models"][name] = entry
    record.setdefault("seeds", {}).update({run.name: _seed_entry(run, render_limit) for run in seed_runs})
    names = sorted(record["models"], key=lambda n: ("diffmesh" not in n, n))
    paths = [WEIGHTS_DIR / n for n in names]
    _score_synthetic(record, paths)
    record["renders"] = _render_scores(paths, render_limit)
    record["real_video"] = _real_video_summary(run_eval_video([str(p) for p in paths], progress=False))
    report = json.loads((default_cache_dir() / "report.json").read_text())
    record["data"] = {"fit_error_mm": report["error"], "fit_iterations": report["iterations"]}
    tmp = RECORD.with_name(".record.json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, RECORD)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="*", type=Path, help="run folders to ship (each with best.pt and last.pt); none "
                   "with --update --seeds: only record more seeds beside the shipped models")
    p.add_argument("--update", action="store_true", help="keep the record's other shipped models (default: the "
                   "record holds only these runs)")
    p.add_argument("--seeds", nargs="+", type=Path, default=[], metavar="RUN",
                   help="other seeds of the recipe to record (not shipped): command, validation, real-video figures")
    p.add_argument("--render-limit", type=int, default=None, metavar="N",
                   help="score N evenly spaced files of the rendered test split (default: all of it)")
    args = p.parse_args(argv)
    if not args.runs and not (args.update and args.seeds):
        p.error("give the run folders to ship, or --update --seeds RUN... to record other seeds only")
    from ..evaluation.cmu import format_table

    record = publish(args.runs, update=args.update, seed_runs=args.seeds, render_limit=args.render_limit)
    print(format_table(record["test"]) if "results" in record["test"] else record["test"]["missing"])
    for method, sets in record["real_video"]["mean"].items():
        m = sets["limbs12"]
        print(f"real video, 12 limbs: {method} PA-MPJPE {m['pa_mpjpe']:.1f} mm, "
              f"ACC-ERR vs smoothed reference {m['acc_err_smoothed']:.1f}")
    print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
