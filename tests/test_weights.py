"""The shipped weights: small, loadable by default, and their recorded scores reproduce."""

import json
import re
from pathlib import Path

import pytest

from diffmesh.checkpoint import load_model
from diffmesh.paths import DEFAULT_CHECKPOINT, WEIGHTS_DIR
from diffmesh.train.publish import CHECK_SUBSET_CLIPS, RECORD

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
# Tolerance on the re-evaluated figures: the ground truth comes from a fit rerun on the test machine, which
# agrees with ours to float rounding on the same CPU family; 0.5 mm absorbs other BLAS builds.
TOL_MM = 0.5
TOL_ACC = 0.05


def test_weights_are_small_and_load_with_the_default_body(anny_body):
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.pt"))
    assert DEFAULT_CHECKPOINT.exists() and total < 20 * 2**20, f"{total / 2**20:.1f} MB shipped"
    model = load_model(DEFAULT_CHECKPOINT, anny_body, expect={"method": "diffmesh", "input": "keypoints"})
    assert model.cfg.num_frames == 16 and model.cfg.num_steps == 30


def test_record_and_docs_agree():
    record = json.loads(RECORD.read_text())
    text = DOCS.read_text()
    for row in record["test"]["results"]:
        m = re.search(rf"^\| {row['method']} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", text, re.M)
        assert m, f"docs/results.md has no row for {row['method']}"
        got = [float(x) for x in m.groups()]
        want = [row["mpjpe_mm"], row["pa_mpjpe_mm"], row["mpve_mm"], row["acc_err_mm"]]
        assert all(abs(g - w) <= 0.051 for g, w in zip(got, want)), (row["method"], got, want)


@pytest.mark.slow
def test_shipped_weights_reproduce_their_recorded_scores(test_split_fits):
    """The synthetic 48-clip subset, re-scored with the first shipped model that reads it (the default one unless
    it reads MediaPipe's 3D, which the synthetic split lacks; `tests/test_real_video.py` re-scores that one)."""
    from diffmesh.evaluation.cmu import run_eval

    record = json.loads(RECORD.read_text())
    want = {Path(r["checkpoint"]).name: r for r in record["check_subset"]["results"]}
    checkpoint = WEIGHTS_DIR / (DEFAULT_CHECKPOINT.name if DEFAULT_CHECKPOINT.name in want else next(iter(want)))
    report = run_eval([checkpoint], limit=CHECK_SUBSET_CLIPS, with_vertices=False)
    assert report["clips"] == record["check_subset"]["clips"]
    got = report["results"][0]
    ref = want[checkpoint.name]
    for key, tol in (("mpjpe_mm", TOL_MM), ("pa_mpjpe_mm", TOL_MM), ("acc_err_mm", TOL_ACC)):
        assert abs(got[key] - ref[key]) <= tol, f"{key}: {got[key]:.2f} now, {ref[key]:.2f} recorded"
