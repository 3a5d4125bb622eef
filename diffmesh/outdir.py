"""Output folders that appear whole or not at all: everything is written into a hidden staging folder next to
OUTDIR, which replaces OUTDIR only when complete; an existing OUTDIR is kept unless `force`."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import DiffMeshError


def prepare_outdir(outdir: str | Path, force: bool) -> tuple[Path, Path]:
    """Return (final dir, staging dir). Refuses an existing OUTDIR without `force` and an unwritable parent."""
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise DiffMeshError(f"{outdir} already exists; choose another -o or pass --force to replace it")
    if outdir.exists() and not outdir.is_dir():
        raise DiffMeshError(f"{outdir} is a file, not a folder; choose another -o")
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


def write_json(obj, path: str | Path) -> None:
    """Write `obj` as indented JSON to `path` atomically (a hidden temp file beside it, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_npz(path: str | Path, **arrays) -> None:
    """Write `arrays` as an .npz to `path` atomically (a uniquely named hidden temp file beside it, then a rename),
    so a killed run never leaves a half-written file that a later run would trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
