"""`diffmesh bench`: the JSON schema of a --quick run (no timing assertions), its one-line errors, and the pieces the
timings rest on (the sequential Baseline 1 and the adapter-free forward compute what the model computes)."""

import json
import subprocess
import sys

import pytest
import torch

from diffmesh.bench import DEFAULT_SETTINGS, SETTINGS, Recorder, adapter_replaced, baseline1_sequential, linear_fit, paired_ratio
from diffmesh.cli import main

COMMON = {"schema": str, "run_id": str, "hardware": dict, "torch": str, "device": str, "quick": bool, "setting": str,
          "kind": str, "load_1min": (float, int, type(None))}
TIMING = {"method": str, "variant": str, "repeats": int, "warmup": int, "median_s": float, "min_s": float,
          "max_s": float, "samples_s": list, "frames": int, "ms_per_frame": float, "fps": float, "memory": dict}
FIT = {"method": str, "frames_list": list, "median_s": list, "peak_rss_mb": list, "time_fit": dict,
       "memory_fit": dict}
NUMBER = (int, float)


def _check_types(line: dict, schema: dict) -> None:
    for key, kind in schema.items():
        assert key in line, f"{key} missing from {line.get('setting')}/{line.get('method')}"
        assert isinstance(line[key], kind), f"{key}: {type(line[key]).__name__} in {line}"


def _check_targets(line: dict) -> None:
    for t in line.get("targets", []):
        assert set(t) == {"name", "value", "op", "limit", "met"}
        assert t["op"] in ("<=", ">=", "<") and isinstance(t["limit"], NUMBER)
        assert t["met"] is None or isinstance(t["met"], bool)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `diffmesh bench --quick --out FILE` in a subprocess (about a minute on 2 idle cores)."""
    out = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    proc = subprocess.run([sys.executable, "-m", "diffmesh.cli", "bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return [json.loads(ln) for ln in out.read_text().splitlines()], stdout


def test_quick_bench_writes_one_valid_json_object_per_line(quick_run):
    lines, stdout = quick_run
    assert lines == stdout                                   # printed and written alike
    assert {ln["run_id"] for ln in lines} == {lines[0]["run_id"]}
    hw = lines[0]["hardware"]
    assert isinstance(hw["cpu"], str) and hw["cpu"] and hw["logical_cores"] >= 1 and hw["torch_threads"] >= 1
    assert hw["gpu"] is None and lines[0]["device"] == "cpu" and lines[0]["torch"] == torch.__version__
    for line in lines:
        _check_types(line, COMMON)
        assert line["setting"] in SETTINGS and line["kind"] in ("timing", "fit", "skipped")
        _check_targets(line)
        if line["kind"] == "timing":
            _check_types(line, TIMING)
            assert 0 < line["min_s"] <= line["median_s"] <= line["max_s"]
            assert len(line["samples_s"]) == line["repeats"] >= 1 and all(s > 0 for s in line["samples_s"])
            assert line["frames"] >= 1 and line["ms_per_frame"] > 0 and line["fps"] > 0
            assert line["memory"]["kind"] in ("rss_sampled", "rss_tree_sampled", "subprocess", "cuda_max_allocated")
            assert line["memory"]["peak_mb"] is None or line["memory"]["peak_mb"] > 0
            for name, ratio in line.get("ratio_to", {}).items():
                assert isinstance(name, str) and isinstance(ratio, float) and ratio > 0
        elif line["kind"] == "fit":
            _check_types(line, FIT)
            assert len(line["frames_list"]) == len(line["median_s"]) == len(line["peak_rss_mb"]) >= 2
            for fit in (line["time_fit"], line["memory_fit"]):
                assert {"intercept", "slope", "r2", "max_rel_dev"} <= set(fit)
            assert isinstance(line["time_fit"]["slope_ms_per_frame"], NUMBER)
    timed = {ln["setting"] for ln in lines if ln["kind"] == "timing"}
    assert timed == set(DEFAULT_SETTINGS), f"settings without timings: {set(DEFAULT_SETTINGS) - timed}"


def test_quick_bench_covers_the_compared_methods(quick_run):
    lines, _ = quick_run
    by = {}
    for ln in lines:
        by.setdefault(ln["setting"], []).append(ln)

    t4 = {(ln["method"], ln["variant"], ln["scope"]): ln for ln in by["table4"]}
    for method, steps in (("diffmesh", 30), ("baseline1", 480), ("baseline2", 30)):
        for scope in ("full", "no_adapter"):
            assert t4[(method, "batched", scope)]["steps"] == steps and t4[(method, "batched", scope)]["frames"] == 16
    assert t4[("baseline1", "sequential", "full")]["steps"] == 480
    assert {"baseline1", "baseline1_sequential", "baseline2"} <= set(t4[("diffmesh", "batched", "full")]["ratio_to"])
    assert len(t4[("diffmesh", "batched", "full")]["targets"]) == 3

    t9 = {(ln["method"], ln["variant"]): ln for ln in by["table9"]}
    for method in ("diffmesh", "tcmr", "mpsnet", "glot"):
        assert t9[(method, "bodies_per_frame")]["output"] == [64, 6890, 3]
    assert t9[("diffmesh", "bodies_per_frame")]["fastest_peer"] in ("tcmr", "mpsnet", "glot")
    assert {"tcmr", "mpsnet", "glot"} <= set(t9[("diffmesh", "bodies_per_frame")]["ratio_to"])

    video = {ln["variant"]: ln for ln in by["video"]}
    assert set(video) == {"decode_only", "no_render", "render", "two_people"}
    assert video["two_people"]["people"] == 2                          # the man and the woman of the demo
    assert {"diffmesh", "body", "total"} <= set(video["no_render"]["stages"])
    assert "render" in video["render"]["stages"] and "render" not in video["no_render"]["stages"]
    assert 0 < video["no_render"]["model_body_share"] < 1

    growth = by["growth"]
    for method in ("model", "pipeline"):
        assert sorted(ln["frames"] for ln in growth if ln["method"] == method and ln["kind"] == "timing") == [64, 256]
        assert [ln for ln in growth if ln["method"] == method and ln["kind"] == "fit"]


def test_recorder_appends_whole_lines_atomically(tmp_path):
    out = tmp_path / "b.jsonl"
    out.write_text('{"old": 1}')                               # an earlier run's file, last newline missing
    printed = []
    rec = Recorder(str(out), {"run_id": "x"}, echo=printed.append)
    rec.emit({"setting": "table4", "v": 1})
    rec.emit({"setting": "table9", "v": 2})
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[0] == {"old": 1} and [ln["v"] for ln in lines[1:]] == [1, 2]
    assert [json.loads(p)["v"] for p in printed] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl"]  # no temporary file left


def test_cuda_without_cuda_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffmesh: error:") and "CUDA" in err, err


@pytest.mark.parametrize("argv, word", [(["--settings", "table4,table5"], "table5"), (["--preset", "huge"], "huge"),
                                        (["--repeats", "0"], "repeats")])
def test_bad_options_are_one_line_errors(capsys, argv, word):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffmesh: error:") and word in err, err


def _tiny(method, body, **overrides):
    from diffmesh.model import build_model, model_config

    torch.manual_seed(0)
    return build_model(model_config("tiny", method=method, **overrides), body).eval()


@torch.inference_mode()
def test_sequential_baseline1_computes_what_the_batched_forward_does(anny_body):
    # 8 frames and 10 steps (80 denoiser calls one after the other) instead of the preset's 16 x 30: the same code
    # path, a sixth of the time
    model = _tiny("baseline1", anny_body, num_frames=8, num_steps=10)
    x = torch.randn(2, 8, 17, 3)
    batched = model(x, generator=torch.Generator().manual_seed(3))
    sequential = baseline1_sequential(model, x, generator=torch.Generator().manual_seed(3))
    assert sequential.denoiser_calls == batched.denoiser_calls == 8 * model.cfg.num_steps
    torch.testing.assert_close(sequential.frame_features, batched.frame_features, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sequential.rotmats, batched.rotmats, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="baseline1"):
        baseline1_sequential(_tiny("diffmesh", anny_body), x)


@torch.inference_mode()
@pytest.mark.parametrize("method", ["diffmesh", "baseline1", "baseline2"])
def test_forward_without_the_adapter_is_the_same_forward(anny_body, method):
    model = _tiny(method, anny_body)
    x = torch.randn(1, 16, 17, 3)
    full = model(x, generator=torch.Generator().manual_seed(4))
    adapter = model.adapter
    with adapter_replaced(model, model.adapter(x)):
        assert model.adapter is not adapter
        rest = model(x, generator=torch.Generator().manual_seed(4))
    assert model.adapter is adapter
    torch.testing.assert_close(rest.rotmats, full.rotmats)


def test_linear_fit_and_paired_ratio():
    fit = linear_fit([64, 256, 1024, 4096], [1 + 0.002 * t for t in (64, 256, 1024, 4096)])
    assert fit["slope"] == pytest.approx(0.002) and fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["max_rel_dev"] < 1e-9
    assert paired_ratio([1.0, 2.0, 30.0], [2.0, 4.0, 6.0]) == pytest.approx(0.5)


def test_quick_batch_bench_reports_throughput_memory_and_targets(tmp_path):
    """`diffmesh bench --settings batch --quick`: the local pool with 1 and 2 workers and a local Ray instance on
    the same clips, every video done, and the summary's targets (values not asserted: a test cannot time)."""
    pytest.importorskip("ray")
    out = tmp_path / "bench.jsonl"
    proc = subprocess.run([sys.executable, "-m", "diffmesh.cli", "bench", "--settings", "batch", "--quick", "--out",
                           str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    runs = {ln["variant"]: ln for ln in lines if ln["kind"] == "throughput"}
    assert set(runs) == {"pool-1", "pool-2", "ray-local"}
    for line in runs.values():
        assert line["failed"] == 0 and line["videos"] == 2 and line["seconds"] > 0 and line["fps"] > 0
        assert line["peak_worker_mb"] > 200                      # a worker holds torch, Anny and MediaPipe
    assert runs["ray-local"]["startup_s"] > 0 and runs["pool-1"]["startup_s"] == 0
    (summary,) = [ln for ln in lines if ln["kind"] == "summary"]
    assert 0.5 < summary["machine_2proc_scaling"] < 2.5         # two busy processes on 2 cores: about 1x to 2x one
    assert {t["name"] for t in summary["targets"]} == {"batch_pool2_vs_pool1", "batch_ray_vs_pool2",
                                                      "batch_peak_worker_mb"}
    _check_targets(summary)
