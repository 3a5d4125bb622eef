"""Calibrated cameras of a multi-view recording: the Pose2Sim multi-person demo (PyPI `pose2sim==0.10.49`, BSD-3),
fetched into the data cache on first use, and its Qualisys calibration read the way Pose2Sim's `calibration.py`
reads it.

Qualisys stores each camera's pose in the world (a rotation stored by columns, a position in mm) and intrinsics in
sub-pixel units (64 per pixel). Pose2Sim turns them into OpenCV's world-to-camera form: R_cam = R_world^T,
t = -R_cam @ position, then a half turn about the camera's x axis (Qualisys cameras look along -z with y up,
OpenCV's along +z with y down); intrinsics and distortion are divided by 64. A world point X (metres) lands on
pixel cv2.projectPoints(X, R, t, K, dist).
"""

import hashlib
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError, MissingFileError
from ..outdir import staged_outdir
from ..paths import cache_root

POSE2SIM_VERSION = "0.10.49"
POSE2SIM_WHEEL = f"pose2sim-{POSE2SIM_VERSION}-py3-none-any.whl"
POSE2SIM_SHA256 = "403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1"
DEMO = "Pose2Sim/Demo_MultiPerson"
DEMO_MEMBERS = ("calibration/Calib.qca.txt", *(f"videos/cam0{i}.mp4" for i in range(1, 5)))
_QUALISYS_SUBPIXELS = 64
_HALF_TURN_X = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CalibratedCamera:
    """One view: name, image size (width, height) px, intrinsics K (3, 3), distortion (k1, k2, p1, p2), world-to-
    camera rotation R (3, 3) and translation t (3,) in metres."""

    name: str
    size: tuple[int, int]
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) in metres -> distorted pixels (..., 2)."""
        flat = np.asarray(points, np.float64).reshape(-1, 3)
        uv, _ = cv2.projectPoints(flat, cv2.Rodrigues(self.R)[0], self.t, self.K, self.dist)
        return uv.reshape(*np.shape(points)[:-1], 2)

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (..., 2) -> undistorted normalized image coordinates (..., 2) (x/z, y/z in the camera)."""
        flat = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        xy = cv2.undistortPointsIter(flat, self.K, self.dist, None, None,
                                     (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))
        return xy.reshape(*np.shape(pixels)[:-1], 2)

    @property
    def projection(self) -> np.ndarray:
        """[R | t] (3, 4): normalized image coordinates = dehomogenised projection @ (X, 1)."""
        return np.hstack([self.R, self.t[:, None]])


def _float(tag: ET.Element, key: str, path: Path) -> float:
    try:
        return float(tag.attrib[key])
    except (KeyError, ValueError):
        raise DataError(f"{path}: camera attribute '{key}' is missing or not a number; is it a Qualisys .qca.txt "
                        "calibration?") from None


def _camera(cam: ET.Element, path: Path) -> CalibratedCamera:
    fov, intr, tr = cam.find("fov_video"), cam.find("intrinsic"), cam.find("transform")
    if fov is None or intr is None or tr is None:
        raise DataError(f"{path}: camera '{cam.get('serial')}' lacks fov_video, intrinsic or transform")
    left, top = _float(fov, "left", path), _float(fov, "top", path)
    size = (int(_float(fov, "right", path) - left + 1), int(_float(fov, "bottom", path) - top + 1))
    s = _QUALISYS_SUBPIXELS
    K = np.array([[_float(intr, "focalLengthU", path) / s, 0, _float(intr, "centerPointU", path) / s - left],
                  [0, _float(intr, "focalLengthV", path) / s, _float(intr, "centerPointV", path) / s - top],
                  [0, 0, 1]])
    dist = np.array([_float(intr, k, path) / s for k in ("radialDistortion1", "radialDistortion2",
                                                        "tangentalDistortion1", "tangentalDistortion2")])
    rot_world = np.array([[_float(tr, f"r{i}{j}", path) for j in (1, 2, 3)] for i in (1, 2, 3)]).T
    position = np.array([_float(tr, k, path) for k in "xyz"]) / 1000
    R = rot_world.T
    t = -R @ position
    return CalibratedCamera(str(cam.get("serial")), size, K, dist, _HALF_TURN_X @ R, _HALF_TURN_X @ t)


def read_qca(path: str | Path) -> list[CalibratedCamera]:
    """The video cameras of a Qualisys calibration, sorted by name (cam01, cam02, ...)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError(f"{path} is not a readable Qualisys calibration ({e}); fetch the demo files again") from None
    cameras = [_camera(c, path) for c in root.findall("cameras/camera")
               if any(m in c.get("model", "").lower() for m in ("video", "none"))]
    if not cameras:
        raise DataError(f"{path} holds no video camera; is it a Qualisys .qca.txt calibration?")
    return sorted(cameras, key=lambda c: c.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache: Path, download: bool = True) -> Path:
    """The pose2sim wheel in `cache`, downloaded with pip when missing (and `download`), hash-checked."""
    wheel = cache / POSE2SIM_WHEEL
    command = f"{sys.executable} -m pip download --no-deps pose2sim=={POSE2SIM_VERSION} -d {cache}"
    if not wheel.is_file() and download:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(command.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not wheel.is_file():
        raise MissingFileError(f"the Pose2Sim demo is not in {cache}; download it with `{command}`")
    if _sha256(wheel) != POSE2SIM_SHA256:
        raise DataError(f"{wheel} is corrupt (sha256 differs); delete it and run `{command}`")
    return wheel


def demo_multiperson(cache: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding Pose2Sim's Demo_MultiPerson calibration and four videos, extracted from the wheel into
    the data cache once (the folder appears whole or not at all)."""
    cache = Path(cache) if cache else cache_root() / "pose2sim"
    folder = cache / "Demo_MultiPerson"
    if all((folder / m).is_file() for m in DEMO_MEMBERS):
        return folder
    wheel = fetch_wheel(cache, download)
    with staged_outdir(folder, force=True, wait=True) as staging:     # a second process waits, then re-extracts
        with zipfile.ZipFile(wheel) as z:
            for member in DEMO_MEMBERS:
                (staging / member).parent.mkdir(parents=True, exist_ok=True)
                (staging / member).write_bytes(z.read(f"{DEMO}/{member}"))
    return folder
