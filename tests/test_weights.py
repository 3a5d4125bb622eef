"""The shipped weights: small, loadable by default, and their recorded scores reproduce."""

import json
import re
from pathlib import Path

import pytest

from diffmesh.checkpoint import load_model
from diffmesh.evaluation.real_video import MEDIAPIPE_FILTERED, MEDIAPIPE_RAW
from diffmesh.paths import DEFAULT_CHECKPOINT, WEIGHTS_DIR
from diffmesh.train.publish import CHECK_SUBSET_CLIPS, RECORD, reads_synthetic

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
# Tolerance on the re-evaluated figures: the ground truth comes from a fit rerun on the test machine, which
# agrees with ours to float rounding on the same CPU family; 0.5 mm absorbs other BLAS builds.
TOL_MM = 0.5
TOL_ACC = 0.05


def test_weights_are_small_and_load_with_the_default_body(anny_body):
    # four models of 0.9-2.3 M parameters in float32 (the anchored head's refinement is most of it): ~36 MB
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.pt"))
    assert DEFAULT_CHECKPOINT.exists() and total < 40 * 2**20, f"{total / 2**20:.1f} MB shipped"
    model = load_model(DEFAULT_CHECKPOINT, anny_body, expect={"method": "diffmesh", "input": "keypoints"})
    assert model.cfg.num_frames == 16 and model.cfg.num_steps == 30


MEDIAPIPE_ROWS = (MEDIAPIPE_RAW, MEDIAPIPE_FILTERED)
# How docs/results.md's first table names each shipped checkpoint.
LABELS = {"diffmesh_tiny_anny": "DiffMesh", "baseline2_tiny_anny": "Baseline 2", "baseline1_tiny_anny": "Baseline 1",
          "perframe_tiny_anny": "per-frame model"}


def test_real_video_table_is_the_record():
    """The first table of docs/results.md (real video, mean over views, 12 limbs) holds record.json's figures
    for every shipped checkpoint."""
    record = json.loads(RECORD.read_text())
    text = DOCS.read_text()
    first_table = text[text.index("## Real video"):].split("\n### ")[0]
    shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    assert shipped == sorted(LABELS)
    for stem in shipped:
        m = re.search(rf"^\| {LABELS[stem]} \(shipped[^|]*\) \| \**([\d.]+)\** \| \**([\d.]+)\** \| \**([\d.]+)\** "
                      rf"\| \**([\d.]+)\** \|", first_table, re.M)
        assert m, f"docs/results.md's real-video table has no row for {stem}"
        want = record["real_video"]["mean"][stem]["limbs12"]
        want = [want[k] for k in ("pa_mpjpe", "mpjpe", "acc_err", "acc_err_smoothed")]
        got = [float(x) for x in m.groups()]
        assert all(abs(g - w) <= 0.051 for g, w in zip(got, want)), (stem, got, want)


def test_seed_table_is_the_record():
    """docs/results.md's seeds table holds record.json's real-video figures for every recorded seed run."""
    record = json.loads(RECORD.read_text())
    text = DOCS.read_text()
    seeds_section = text[text.index("### Seeds on the shipped recipe"):].split("\n### ")[0]
    names = {"diffmesh": "DiffMesh", "baseline2": "Baseline 2", "baseline1": "Baseline 1", "perframe": "per-frame model"}
    assert record["seeds"], "record.json lists no seed runs"
    for run, entry in record["seeds"].items():
        label = f"{names[entry['method']]} seed {entry['seed']}"
        m = re.search(rf"^\| {label}\b[^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", seeds_section, re.M)
        assert m, f"docs/results.md's seeds table has no row for {run} ({label})"
        [want] = [v["limbs12"] for k, v in entry["real_video"]["mean"].items() if k not in MEDIAPIPE_ROWS]
        want = [want[k] for k in ("pa_mpjpe", "mpjpe", "acc_err_smoothed")]
        got = [float(x) for x in m.groups()]
        assert all(abs(g - w) <= 0.051 for g, w in zip(got, want)), (run, got, want)


def test_synthetic_table_is_the_record():
    record = json.loads(RECORD.read_text())
    text = DOCS.read_text()
    for row in record["test"].get("results", []):       # none once every shipped model reads MediaPipe's 3D
        m = re.search(rf"^\| {row['method']} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", text, re.M)
        assert m, f"docs/results.md has no row for {row['method']}"
        got = [float(x) for x in m.groups()]
        want = [row["mpjpe_mm"], row["pa_mpjpe_mm"], row["mpve_mm"], row["acc_err_mm"]]
        assert all(abs(g - w) <= 0.051 for g, w in zip(got, want)), (row["method"], got, want)


@pytest.mark.slow
def test_shipped_weights_reproduce_their_recorded_scores(request):
    """The synthetic 48-clip subset, re-scored with the first shipped model that reads it (the default one unless
    it reads MediaPipe's 3D, which the synthetic split lacks; `tests/test_real_video.py` re-scores that one)."""
    from diffmesh.evaluation.cmu import run_eval

    record = json.loads(RECORD.read_text())
    want = {Path(r["checkpoint"]).name: r for r in record["check_subset"].get("results", [])}
    if not want:        # every shipped model reads MediaPipe's 3D: tests/test_real_video.py re-scores them all
        readers = [p.name for p in WEIGHTS_DIR.glob("*.pt") if reads_synthetic(p)]
        assert not readers, f"{readers} read the synthetic split but record.json has no figures for them"
        return
    request.getfixturevalue("test_split_fits")      # the fits, only when there is something to score
    checkpoint = WEIGHTS_DIR / (DEFAULT_CHECKPOINT.name if DEFAULT_CHECKPOINT.name in want else next(iter(want)))
    report = run_eval([checkpoint], limit=CHECK_SUBSET_CLIPS, with_vertices=False)
    assert report["clips"] == record["check_subset"]["clips"]
    got = report["results"][0]
    ref = want[checkpoint.name]
    for key, tol in (("mpjpe_mm", TOL_MM), ("pa_mpjpe_mm", TOL_MM), ("acc_err_mm", TOL_ACC)):
        assert abs(got[key] - ref[key]) <= tol, f"{key}: {got[key]:.2f} now, {ref[key]:.2f} recorded"


def test_publish_without_runs_or_seeds_says_what_to_give(capsys):
    from diffmesh.train.publish import main as publish_main

    with pytest.raises(SystemExit) as stop:
        publish_main([])
    assert stop.value.code == 2 and "--update --seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        publish_main(["--seeds", "runs/x"])                 # seeds alone would drop the shipped models' record
