"""`diffmesh app` as a person uses it: the real server started by the command, driven in headless Chromium (Debian's
chromium and chromium-driver, which `make test` installs): a 2-second cut of the sample uploaded, its result
played in the page and downloaded; a text file named .mp4 refused on the page; the queue, cancel and the safety
rules checked against the same server over HTTP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmesh.paths import VIDEOS_DIR
from diffmesh.video.decode import VideoWriter, iter_frames, probe_video

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEMO = VIDEOS_DIR / "sports2d_demo_walk_jumpingjacks_flip.mp4"
LIMIT_MB = 5


def _http(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _json(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict]:
    status, body = _http(url, method, data)
    return status, json.loads(body)


def _app_folders() -> set[Path]:
    return set(Path(os.environ.get("TMPDIR", "/tmp")).glob("diffmesh-app-*"))


@pytest.fixture(scope="module")
def app_url():
    """`diffmesh app` in its own process, as a user starts it; stopped (Ctrl-C) at the end, which must remove
    every job's folder."""
    before = _app_folders()
    server = subprocess.Popen([sys.executable, "-m", "diffmesh.cli", "app", "--max-upload-mb", str(LIMIT_MB)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    assert "http://127.0.0.1:" in line, line + server.stderr.read()          # loopback by default
    url = line.split("open ")[1].split()[0].rstrip("/")
    deadline = time.time() + 180
    while time.time() < deadline:                     # the page answers at once; the worker warms up meanwhile
        try:
            if _json(f"{url}/api/info")[1]["ready"]:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the app's worker never became ready")
    yield url
    server.send_signal(signal.SIGINT)
    assert server.wait(30) == 0
    assert _app_folders() == before                   # results last until the server stops, then go


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: `make test` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1600",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _two_seconds(path: Path) -> Path:
    """Frames 40-99 of the sample (the woman walking in, the man on the box): 60 frames, 2.0 s at 30 fps, 720p."""
    with VideoWriter(path, 30) as out:
        for frame in iter_frames(DEMO, max_frames=100):
            if frame.index >= 40:
                out.write(frame.rgb)
    return path


def _wait(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _viewer_pixels(browser) -> np.ndarray:
    """What the 3D view draws, from `<model-viewer>`'s own `toDataURL` (its WebGL canvas, RGBA, transparent where
    nothing is drawn): independent of where the element sits on the page, which a screenshot of it is not."""
    import base64

    url = browser.execute_script("return document.getElementById('viewer').toDataURL('image/png')")
    png = base64.b64decode(url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(int)


def test_an_uploaded_clip_plays_in_the_page_in_3d_and_downloads(app_url, browser, tmp_path):
    import pygltflib
    from bvh import Bvh

    from diffmesh.result import Result

    clip = _two_seconds(tmp_path / "my clip.mp4")
    browser.get(app_url + "/")
    _wait(lambda: browser.execute_script("return document.body.dataset.ready"), 10, "the page")
    browser.find_element("id", "file").send_keys(str(clip))
    browser.find_element("id", "start-button").click()
    _wait(lambda: browser.execute_script("return !document.getElementById('result').hidden"), 300, "the result")
    # the overlay video plays the clip's 2 seconds
    duration = _wait(lambda: browser.execute_script("return document.getElementById('overlay').duration"), 20,
                     "the overlay video")
    assert abs(duration - 2.0) < 0.05
    # the 3D view draws the body (not only its background) and its animation runs
    _wait(lambda: browser.execute_script("return document.getElementById('viewer').loaded"), 30, "the GLB")

    def body_pixels(image):                       # drawn (opaque) pixels: the body and its shadow
        return (image[..., 3] > 0).mean()

    # the first frames after loading can still be the empty background (software WebGL compiles its shaders)
    first = _wait(lambda: (lambda im: (im,) if body_pixels(im) > 0.002 else None)(_viewer_pixels(browser)), 30,
                  "the body in the 3D view")[0]
    t0 = browser.execute_script("return document.getElementById('viewer').currentTime")
    time.sleep(1.0)
    second = _viewer_pixels(browser)
    t1 = browser.execute_script("return document.getElementById('viewer').currentTime")
    assert 0.002 < body_pixels(second) < 0.5                                   # a body, not a filled canvas
    assert t1 != t0 and np.abs(first - second).max(-1).mean() > 0               # it moves
    # the scrubber pauses the animation and sets its time
    browser.execute_script("const s = document.getElementById('scrubber'); s.value = 500;"
                           "s.dispatchEvent(new Event('input'));")
    state = browser.execute_script("const v = document.getElementById('viewer'); return [v.paused, v.currentTime,"
                                   " v.duration]")
    assert state[0] and abs(state[1] - state[2] / 2) < 0.05
    # the jitter plot has a line, and every stage is shown done
    assert browser.execute_script("return document.querySelectorAll('#jitter path.jitter-line').length") >= 1
    stages = browser.execute_script("return [...document.querySelectorAll('#jobs .stage')].map(s => s.className)")
    assert stages and all("done" in s for s in stages)
    # every download is a valid file of its kind
    links = {a.text.split(" ")[0]: a.get_attribute("href") for a in browser.find_elements("css selector",
                                                                                          "#downloads a")}
    assert {"result.npz", "mesh.glb", "overlay.mp4"} <= set(links)
    bvhs = [name for name in links if name.startswith("motion") and name.endswith(".bvh")]
    assert bvhs, links                                         # motion.bvh, or one per person found
    for name, href in links.items():
        status, blob = _http(href)
        assert status == 200
        (tmp_path / name).write_bytes(blob)
    assert Result.load(tmp_path / "result.npz").num_frames == 60
    gltf = pygltflib.GLTF2().load(str(tmp_path / "mesh.glb"))
    assert len(gltf.animations) == 1 and len(gltf.skins) >= 1
    assert all(Bvh((tmp_path / name).read_text()).nframes == 60 for name in bvhs)
    assert probe_video(tmp_path / "overlay.mp4").num_frames == 60
    browser.save_screenshot(str(tmp_path / "page.png"))
    if os.environ.get("DIFFMESH_APP_SCREENSHOT"):               # docs/images/app.png is made this way
        shutil.copy(tmp_path / "page.png", os.environ["DIFFMESH_APP_SCREENSHOT"])


def test_a_text_file_named_mp4_gets_a_message_on_the_page(app_url, browser, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video, only text with a video's name\n" * 20)
    browser.get(app_url + "/")
    _wait(lambda: browser.execute_script("return document.body.dataset.ready"), 10, "the page")
    browser.find_element("id", "file").send_keys(str(fake))
    browser.find_element("id", "start-button").click()
    message = _wait(lambda: browser.find_element("id", "error").text, 30, "the error message")
    assert "not a video" in message and "/tmp" not in message                # no server path shown
    assert _json(f"{app_url}/api/info")[0] == 200                             # and the server keeps serving


def test_jobs_wait_their_turn_and_cancel_leaves_nothing(app_url):
    _, first = _json(f"{app_url}/api/jobs?sample=1&exports=npz", "POST")
    _, second = _json(f"{app_url}/api/jobs?sample=1&exports=npz", "POST")
    status = lambda job: _json(f"{app_url}/api/jobs/{job['id']}")[1]         # noqa: E731
    _wait(lambda: status(first)["state"] == "running" and status(first)["stages"], 60, "the first job to start")
    assert status(second)["state"] == "queued" and status(second)["place"] == 1
    started = time.time()
    assert _json(f"{app_url}/api/info")[0] == 200 and time.time() - started < 2     # not blocked by the job
    assert _json(f"{app_url}/api/jobs/{first['id']}/cancel", "POST")[1]["cancelled"]
    assert status(first)["state"] == "cancelled" and status(first)["files"] == []
    assert not [p for folder in _app_folders() for p in folder.glob(first["id"] + "*")]  # its folder is gone
    _wait(lambda: status(second)["state"] == "running", 120, "the second job to start")
    assert _json(f"{app_url}/api/jobs/{second['id']}/cancel", "POST")[1]["cancelled"]
    assert not _json(f"{app_url}/api/jobs/{second['id']}/cancel", "POST")[1]["cancelled"]    # once only


def test_uploads_are_limited_and_only_a_jobs_own_outputs_are_served(app_url):
    big = np.random.default_rng(0).bytes((LIMIT_MB + 1) * 2**20)
    status, answer = _json(f"{app_url}/api/jobs?name=big.mp4", "POST", big)
    assert status == 413 and f"{LIMIT_MB} MB" in answer["error"]
    status, answer = _json(f"{app_url}/api/jobs?name=x.mp4", "POST", b"")
    assert status == 400 and "no video" in answer["error"]
    status, answer = _json(f"{app_url}/api/jobs?sample=1&max_people=-2", "POST")
    assert status == 400 and "people" in answer["error"]
    jobs = _json(f"{app_url}/api/jobs")[1]
    done = [j for j in jobs if j["state"] == "done"]
    assert done, "the upload test leaves a finished job"
    job = done[0]["id"]
    for name in ("input.video", "..%2F..%2F..%2Fetc%2Fpasswd", "..", "result.npz.tmp"):
        assert _http(f"{app_url}/api/jobs/{job}/files/{name}")[0] == 404
    assert _http(f"{app_url}/api/jobs/nosuchjob")[0] == 404
    assert _http(f"{app_url}/static/../server.py")[0] == 404
