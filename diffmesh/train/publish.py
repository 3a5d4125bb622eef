"""Copy trained runs into the package as the shipped weights, with their record (`python -m
diffmesh.train.publish RUN_DIR...`, run by `make weights`).

For each run's best.pt it writes `<method>_tiny_anny.pt` in diffmesh/weights/ (`paths.WEIGHTS_DIR`).
`record.json` there records, for each of them:
- the training command and settings, the data (mocap md5, fit error) and the validation history;
- the scores on the whole CMU test split;
- the scores on a fixed 48-clip subset, which `tests/test_weights.py` recomputes.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from ..checkpoint import read_checkpoint
from ..paths import WEIGHTS_DIR

CHECK_SUBSET_CLIPS = 48
RECORD = WEIGHTS_DIR / "record.json"


def shipped_name(method: str, preset: str = "tiny") -> str:
    return f"{method}_{preset}_anny.pt"


def train_command(settings: dict) -> str:
    return ("diffmesh train " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(settings[k]))}"
        for k in ("preset", "method", "epochs", "steps_per_epoch", "batch_size", "lr", "seed", "val_clips",
                  "noise_model", "motion_form", "aux", "camera_model", "data", "keypoint_inputs", "synthetic_share", "shape_std")
        if k in settings   # older runs lack some
    ) + ("" if settings.get("noise", True) else " --no-noise") + " --threads 1")


def publish(run_dirs: list[Path]) -> dict:
    from ..data.prepare import default_cache_dir
    from ..evaluation.cmu import run_eval

    record = {"models": {}}
    for run in run_dirs:
        payload = read_checkpoint(run / "best.pt")
        settings = payload["settings"]
        history = json.loads(read_checkpoint(run / "last.pt")["history"])
        name = shipped_name(settings["method"], settings["preset"])
        tmp = WEIGHTS_DIR / f".{name}.tmp"
        torch.save({k: payload[k] for k in ("format_version", "config", "model", "settings", "step", "epoch", "val")},
                   tmp)
        os.replace(tmp, WEIGHTS_DIR / name)
        record["models"][name] = {"method": settings["method"], "command": train_command(settings),
                                  "settings": settings, "best_epoch": payload["epoch"], "best_step": payload["step"],
                                  "val_at_best": payload["val"], "history": history,
                                  "train_minutes": history[-1]["seconds"] / 60 if history else None}
    names = sorted(record["models"], key=lambda n: ("diffmesh" not in n, n))
    paths = [WEIGHTS_DIR / n for n in names]
    full = run_eval(paths)
    subset = run_eval(paths, limit=CHECK_SUBSET_CLIPS, with_vertices=False)
    report = json.loads((default_cache_dir() / "report.json").read_text())
    record["data"] = {"fit_error_mm": report["error"], "fit_iterations": report["iterations"]}
    record["test"] = full
    record["check_subset"] = subset
    tmp = RECORD.with_name(".record.json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, RECORD)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with best.pt and last.pt)")
    args = p.parse_args(argv)
    from ..evaluation.cmu import format_table

    record = publish(args.runs)
    print(format_table(record["test"]))
    print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
