"""Output folders that appear whole or not at all: everything is written into a hidden staging folder next to
OUTDIR, which replaces OUTDIR only when complete; an existing OUTDIR is kept unless `force`.

Two runs into one OUTDIR: the first takes a lock beside it (`.OUTDIR.lock`, `fcntl.flock`, released by the
kernel when the process ends, however it ends) and the second stops at once with one line. Where locks are not
available (some network file systems), the commit itself still never replaces a folder another run has made in
the meantime unless `force`: the rename into place fails instead, and that run says so."""

import contextlib
import errno
import fcntl
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


def commit_outdir(staging: Path, outdir: Path, force: bool) -> None:
    """Move the finished staging dir into place. An OUTDIR that exists now is replaced only with `force`:
    without it, a folder that appeared while this run worked (another run, another program) is kept and this
    run fails with one line (its staging folder is the caller's to remove)."""
    if outdir.exists() and force:
        backup = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old.", dir=staging.parent))
        os.replace(outdir, backup / "old")
        os.replace(staging, outdir)
        shutil.rmtree(backup, ignore_errors=True)
        return
    try:
        if outdir.exists() and any(outdir.iterdir()):
            raise FileExistsError(errno.EEXIST, "exists")
        os.rename(staging, outdir)                   # fails on a non-empty folder made since the check
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
        raise DiffMeshError(f"{outdir} was created by another run while this one worked; it is kept and this "
                            "run's output is dropped; choose another -o or pass --force") from None


def _lock_path(outdir: Path) -> Path:
    return outdir.resolve().parent / f".{outdir.name}.lock"


@contextlib.contextmanager
def outdir_lock(outdir: Path, wait: bool = False):
    """Hold the lock of OUTDIR (module docstring) for the block; without `wait`, another holder is a one-line
    error. The lock file is removed on release; a holder whose file was removed meanwhile locks the new one."""
    path = _lock_path(outdir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DiffMeshError(f"cannot write to {path.parent} ({e.strerror}); choose a writable -o") from None
    fd = _acquire(path, outdir, wait)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)


def _acquire(path: Path, outdir: Path, wait: bool) -> int | None:
    """The locked descriptor of `path`, or None where the file system has no locks (the commit still refuses)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DiffMeshError(f"cannot write to {path.parent} ({e.strerror}); choose a writable -o") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise DiffMeshError(f"another run is writing {outdir} now; wait for it to finish or choose another "
                                "-o") from None
        except OSError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd                            # still the file others will open: ours
        except OSError:
            pass
        os.close(fd)                                 # the holder before us removed it: lock the new one


@contextlib.contextmanager
def staged_outdir(outdir: str | Path, force: bool, wait: bool = False):
    """The whole protocol: lock OUTDIR, refuse an existing one without `force`, yield a staging folder to write
    into, and move it into place when the block ends without an error; on any error (Ctrl-C included) the staging
    folder is removed and OUTDIR left as it was."""
    outdir = Path(outdir)
    with outdir_lock(outdir, wait):
        final, staging = prepare_outdir(outdir, force)
        try:
            yield staging
            commit_outdir(staging, final, force)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


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
