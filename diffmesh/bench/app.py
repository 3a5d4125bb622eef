"""The app setting: `diffmesh app` as a user meets it. Seconds from starting the command to the page answering (the
page is interactive once it is served: its script runs no heavy work), then the benchmark video uploaded through
the job API and waited for, against `diffmesh run` on the same video with the same options (overlay included),
each a fresh process, alternating; the ratio is run's wall time over the app's (>= 0.9: the app is at least 90 %
as fast)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..paths import DEMO_VIDEO
from .measure import Recorder, rounded, target
from .options import TARGETS, BenchOptions, timed_rounds


def _get(url: str, data: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def _start_app() -> tuple[subprocess.Popen, str, float, float]:
    """The app's process, its address, seconds until the page is served and until its worker is ready."""
    t = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "diffmesh.cli", "app"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    url = server.stdout.readline().split("open ")[1].split()[0].rstrip("/")
    page_s = ready_s = None
    while ready_s is None:
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as response:
                response.read()
            page_s = page_s or time.perf_counter() - t
            if _get(url + "/api/info")["ready"]:
                ready_s = time.perf_counter() - t
        except OSError:
            pass
        time.sleep(0.05)
    return server, url, page_s, ready_s


def _app_job_s(url: str, video: Path) -> float:
    t = time.perf_counter()
    job = _get(f"{url}/api/jobs?name=bench.mp4", video.read_bytes())["id"]
    while (state := _get(f"{url}/api/jobs/{job}")["state"]) in ("queued", "running"):
        time.sleep(0.05)
    if state != "done":
        raise RuntimeError(f"the app's job ended {state}")
    return time.perf_counter() - t


def _run_s(video: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffmesh.cli", "run", str(video), "-o", str(out), "--force", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def bench_app(opts: BenchOptions, rec: Recorder, folder: Path) -> None:
    video = Path(opts.video) if opts.video else DEMO_VIDEO
    server, url, page_s, ready_s = _start_app()
    try:
        app_s, run_s = [], []
        for _ in range(timed_rounds(opts, "app")):
            app_s.append(_app_job_s(url, video))
            run_s.append(_run_s(video, folder / "app_bench_run"))
    finally:
        server.terminate()
        server.wait(30)
    ratio = statistics.median(run_s) / statistics.median(app_s)
    rec.emit({"setting": "app", "video": video.name, "page_s": rounded(page_s, 3), "worker_ready_s": rounded(ready_s, 3),
              "app_job_s": [rounded(s, 3) for s in app_s], "run_s": [rounded(s, 3) for s in run_s],
              "app_vs_run_speed": rounded(ratio, 3),
              "targets": [target("app_page_s", page_s, TARGETS["app_page_s"], "<="),
                          target("app_vs_run_speed", ratio, TARGETS["app_vs_run_speed"], ">=")]})
