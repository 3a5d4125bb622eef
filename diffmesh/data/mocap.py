"""CMU motion capture (`cmu_30fps.npz`, bundled in `diffmesh/assets/mocap/`) and a joint-position fit of the Anny body to it.

`fit_anny` fits one clip on its own (used by the tests); `diffmesh prepare` (data/prepare.py) fits whole
subjects and caches the result.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ..body.anny_body import AnnyBody
from ..errors import DataError, MissingFileError
from ..paths import DEFAULT_MOCAP

_KEYS = ("joint_names", "parents", "seq_names", "seq_subject", "seq_split", "seq_start", "seq_len",
         "world_pos", "frame_glitch", "fps")
# CMU is y-up; Anny is z-up: (x, y, z)_cmu -> (x, -z, y)_anny, a +90 degree rotation about x.
CMU_TO_ANNY_AXES = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float32)


@dataclass
class MocapClip:
    """positions (T, J, 3) world joints in metres, Anny axes (z up); glitch (T,) bool; name 'SS_TT'; fps."""

    name: str
    positions: np.ndarray
    glitch: np.ndarray
    joint_names: tuple[str, ...]
    fps: float


class CMUMocap:
    """Reader for cmu_30fps.npz (layout in its README)."""

    def __init__(self, path: str | Path = DEFAULT_MOCAP):
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"CMU mocap file not found: {path}; it ships in diffmesh/assets/mocap/ "
                                   "(restore it with `git checkout diffmesh/assets`, or pass --mocap PATH)")
        try:
            data = np.load(path, allow_pickle=False)
            missing = [k for k in _KEYS if k not in data.files]
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is not a readable .npz ({e}); copy cmu_30fps.npz again") from None
        if missing:
            raise DataError(f"{path} lacks key(s) {missing}; is it cmu_30fps.npz?")
        self.path, self._data = path, data
        self.joint_names = tuple(str(n) for n in data["joint_names"])
        self.seq_names = [str(n) for n in data["seq_names"]]
        self.seq_split = [str(s) for s in data["seq_split"]]
        self.seq_subject = [str(s) for s in data["seq_subject"]]
        self.seq_len = [int(n) for n in data["seq_len"]]
        self.fps = float(data["fps"])

    def names(self, split: str | None = None) -> list[str]:
        """Sequence names, optionally of one split ('train', 'val', 'test')."""
        names = [n for n, s in zip(self.seq_names, self.seq_split) if split is None or s == split]
        if split is not None and not names:
            raise DataError(f"split '{split}' of {self.path} is empty; use train, val or test")
        return names

    def subjects(self, split: str | None = None) -> list[str]:
        """Subject ids in file order, optionally of one split."""
        names = self.names(split)
        return list(dict.fromkeys(self.seq_subject[self.seq_names.index(n)] for n in names))

    def sequences_of(self, subject: str) -> list[str]:
        return [n for n, s in zip(self.seq_names, self.seq_subject) if s == subject]

    def md5(self) -> str:
        import hashlib

        return hashlib.md5(self.path.read_bytes()).hexdigest()

    def clip(self, name: str, start: int = 0, length: int | None = None) -> MocapClip:
        """Frames [start, start+length) of sequence `name`, in Anny axes."""
        if name not in self.seq_names:
            raise DataError(f"sequence '{name}' is not in {self.path}")
        i = self.seq_names.index(name)
        s, n = int(self._data["seq_start"][i]), int(self._data["seq_len"][i])
        length = n - start if length is None else length
        if start < 0 or length < 1 or start + length > n:
            raise DataError(f"sequence {name} has {n} frames; frames {start}..{start + length} are out of range")
        pos = self._data["world_pos"][s + start:s + start + length].astype(np.float32) @ CMU_TO_ANNY_AXES.T
        glitch = self._data["frame_glitch"][s + start:s + start + length].astype(bool)
        return MocapClip(f"{name}[{start}:{start + length}]", pos, glitch, self.joint_names, self.fps)


@dataclass
class AnnyFit:
    """A clip of the Anny body fitted to mocap: rotmats (T, K, 3, 3) with the global orientation in bone 0,
    translation (T, 3) of the root, shape (S,) phenotype logits; error_mm (T,) mean joint error per frame."""

    rotmats: Tensor
    translation: Tensor
    shape: Tensor
    error_mm: np.ndarray


def fit_anny(body: AnnyBody, clip: MocapClip, iterations: int = 300) -> AnnyFit:
    """Fit one clip on its own (shape and offsets from its own frames, then every frame's pose); the full
    per-subject fits of `diffmesh prepare` are in data/prepare.py. Returns an AnnyFit (see its docstring)."""
    from .fitting import fit_sequence, fit_subject

    good = clip.positions[~clip.glitch] if (~clip.glitch).any() else clip.positions
    subject = fit_subject(body, good[np.linspace(0, len(good) - 1, min(len(good), 128)).astype(int)],
                          clip.joint_names, iterations=iterations)
    fit = fit_sequence(body, clip.positions, clip.glitch, clip.joint_names, subject, iterations=iterations)
    return AnnyFit(fit.rotmats, fit.translation, subject.shape, fit.error.mean(-1).numpy() * 1000)
