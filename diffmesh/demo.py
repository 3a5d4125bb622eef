"""`diffmesh demo` until the video pipeline lands: a CMU mocap clip -> Anny fit -> meshes -> result.npz + preview.png."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .body import load_body
from .data.mocap import CMUMocap, fit_anny
from .errors import DiffMeshError


def prepare_outdir(outdir: str | Path, force: bool) -> tuple[Path, Path]:
    """Return (final dir, staging dir). Outputs are written to the staging dir and moved in at the end, so a failed
    run leaves nothing behind; an existing OUTDIR is refused unless `force`."""
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise DiffMeshError(f"{outdir} already exists; choose another -o or pass --force to replace it")
    parent = outdir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=parent))
    except OSError as e:
        raise DiffMeshError(f"cannot write to {parent} ({e.strerror}); choose a writable -o") from None
    return outdir, staging


def commit_outdir(staging: Path, outdir: Path) -> None:
    """Move the finished staging dir into place (replacing OUTDIR only now, when everything is written)."""
    if outdir.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old.", dir=staging.parent))
        os.replace(outdir, backup / "old")
        os.replace(staging, outdir)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, outdir)


def render_preview(vertices: np.ndarray, faces: np.ndarray, path: Path, frames: list[int], title: str) -> None:
    """Flat-shaded views of a few frames with matplotlib (a stand-in for the overlay renderer of the video pipeline).
    vertices: (T, V, 3) z-up metres; faces: (F, 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    fig = plt.figure(figsize=(3 * len(frames), 4), dpi=100)
    light = np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])
    for k, t in enumerate(frames):
        ax = fig.add_subplot(1, len(frames), k + 1, projection="3d")
        tri = vertices[t][faces]                                                  # (F, 3, 3)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=np.stack([shade * 0.55, shade * 0.7, shade * 0.9], 1),
                                             linewidths=0))
        c = vertices[t].mean(0)
        for setlim, i in ((ax.set_xlim, 0), (ax.set_ylim, 1), (ax.set_zlim, 2)):
            setlim(c[i] - 1.0, c[i] + 1.0)
        ax.view_init(elev=10, azim=-90)
        ax.set_axis_off()
        ax.set_title(f"frame {t}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def run_demo(outdir: str | Path, mocap: str | None = None, sequence: str = "14_06", start: int = 0,
             frames: int = 64, iterations: int = 300, force: bool = False) -> dict:
    """Fit Anny to a CMU clip and write result.npz and preview.png into `outdir`. Returns a summary dict."""
    db = CMUMocap(mocap) if mocap else CMUMocap()
    clip = db.clip(sequence, start, frames)
    outdir, staging = prepare_outdir(outdir, force)
    try:
        body = load_body("anny")
        fit = fit_anny(body, clip, iterations=iterations)
        with torch.no_grad():
            out = body(fit.rotmats, fit.shape.expand(frames, -1))
        vertices = (out.vertices + fit.translation[:, None]).numpy()
        joints = (out.joints + fit.translation[:, None]).numpy()
        np.savez_compressed(
            staging / "result.npz",
            rotmats=fit.rotmats.numpy(), phenotype=body.phenotypes(fit.shape).numpy(),
            phenotype_labels=np.array(body.phenotype_labels), bone_names=np.array(body.skeleton().names),
            translation=fit.translation.numpy(), joints3d=joints, vertices=vertices.astype(np.float32),
            faces=body.faces.numpy().astype(np.int32), fit_error_mm=fit.error_mm, fps=np.float32(clip.fps),
            source=np.array(clip.name), body_model=np.array("anny"), body_version=np.array(body.version),
        )
        picks = np.linspace(0, frames - 1, 4).round().astype(int).tolist()
        render_preview(vertices, body.faces.numpy(), staging / "preview.png", picks,
                       f"CMU {clip.name} on Anny (fit error {fit.error_mm.mean():.1f} mm)")
        commit_outdir(staging, outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"outdir": str(outdir), "frames": frames, "fit_error_mm": float(fit.error_mm.mean()),
            "files": [str(outdir / "result.npz"), str(outdir / "preview.png")]}
