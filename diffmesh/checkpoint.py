"""Checkpoints: the model's state dict with its resolved config, written atomically and read with
`torch.load(weights_only=True)`; any problem becomes one `CheckpointError` line."""

import os
import pickle
import tempfile
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .errors import CheckpointError, MissingFileError
from .model import DiffMeshModel, ModelConfig, build_model

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: DiffMeshModel, **extra) -> None:
    """Write {format_version, config, model, **extra} to `path` atomically (temp file + rename).
    `extra` values must be tensors, numbers, strings or containers of them (weights_only-loadable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, "config": asdict(model.cfg), "model": model.state_dict(), **extra}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights_only(path: str | Path, what: str = "diffmesh checkpoint", hint: str = "re-download or retrain it"):
    """torch.load(weights_only=True) on CPU; a missing, corrupt or code-carrying file is one line
    (MissingFileError / CheckpointError) naming `what` the file should have been."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is corrupt or not a {what} ({first[:120]}); {hint}") from None


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint's payload safely. Raises MissingFileError / CheckpointError with one line."""
    path = Path(path)
    payload = load_weights_only(path, "diffmesh checkpoint")
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not a diffmesh checkpoint (no model/config inside)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format_version')}, this diffmesh reads "
                              f"{FORMAT_VERSION}; retrain it or use the matching diffmesh version")
    return payload


# Fields added to ModelConfig after checkpoints were shipped, with the value every older checkpoint was trained with
# (their new defaults differ): an old file keeps loading and behaving as it was trained.
LEGACY_DEFAULTS = {"motion_form": "residual", "keypoint_inputs": "2d+vis"}


def checkpoint_config(config: dict) -> ModelConfig:
    """The ModelConfig a checkpoint's stored config describes (unknown keys dropped, missing new ones legacy)."""
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{**LEGACY_DEFAULTS, **{k: v for k, v in config.items() if k in known}})


def load_model(path: str | Path, body, expect: dict | None = None) -> DiffMeshModel:
    """Build the model a checkpoint describes and load its weights.

    Args:
        body: the BodyModel the checkpoint must have been trained for.
        expect: config fields the caller requires (e.g. {'method': 'diffmesh', 'input': 'keypoints'}).
    """
    payload = read_checkpoint(path)
    cfg = checkpoint_config(payload["config"])
    wanted = dict(expect or {})
    wanted.setdefault("body", body.name)
    for key, value in wanted.items():
        if getattr(cfg, key) != value:
            raise CheckpointError(f"{path} was trained with {key}={getattr(cfg, key)!r} but {key}={value!r} was "
                                  f"asked for; pass a checkpoint trained with {key}={value!r}, or settings "
                                  f"that match {key}={getattr(cfg, key)!r}")
    model = build_model(cfg, body)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its own config ({str(e).splitlines()[0][:120]}); "
                              "the file is damaged or was written by another version") from None
    return model
