"""`diffmesh prepare`: fit Anny to every CMU sequence once and cache the fits, one file per subject.

Cache folder: `--cache DIR`, else `$DIFFMESH_CACHE/cmu_anny_fits`, else `~/.cache/diffmesh/cmu_anny_fits`.
Each `subject_SS.npz` is written atomically (temporary file, then rename), so an interrupted run leaves only
complete files; a rerun skips the subjects already done. Every file records the cache format, the mocap
file's md5 and the Anny version; a file that does not match is refused with the command that rebuilds it.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import anny
import numpy as np

from ..body.anny_body import AnnyBody
from ..errors import DataError
from ..outdir import write_json, write_npz
from ..paths import cache_root
from .fitting import CMU_TO_ANNY, JOINT_GROUPS, fit_sequence, fit_subject
from .mocap import CMUMocap

FIT_FORMAT = 1
SUBJECT_SAMPLE_FRAMES = 256     # frames per subject for the shape + offsets stage
SUBJECT_ITERATIONS = 800
SEQUENCE_ITERATIONS = 600


def default_cache_dir() -> Path:
    return cache_root() / "cmu_anny_fits"


def subject_file(cache_dir: Path, subject: str) -> Path:
    return Path(cache_dir) / f"subject_{subject}.npz"


def check_fit_file(path: Path, mocap_md5: str, anny_version: str) -> dict:
    """Open one subject file; one-line DataError when it is unreadable or was made by another version/input."""
    rebuild = f"run `diffmesh prepare --force --cache {path.parent}` to rebuild it"
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"fit cache {path} is unreadable ({type(e).__name__}); {rebuild}") from None
    fmt = int(data.get("format", -1))
    if fmt != FIT_FORMAT:
        raise DataError(f"fit cache {path} was written by another diffmesh version (format {fmt}, this one reads "
                        f"{FIT_FORMAT}); {rebuild}")
    if str(data["mocap_md5"]) != mocap_md5:
        raise DataError(f"fit cache {path} was made from a different mocap file; {rebuild}")
    if str(data["anny_version"]) != anny_version:
        raise DataError(f"fit cache {path} was made with anny {data['anny_version']}, this is anny {anny_version}; "
                        f"{rebuild}")
    return data


def prepare_subject(body: AnnyBody, mocap: CMUMocap, subject: str, subject_iterations: int = SUBJECT_ITERATIONS,
                    sequence_iterations: int = SEQUENCE_ITERATIONS, progress=None) -> dict:
    """Fit one subject (shape + offsets, then each sequence) and return the arrays of its cache file."""
    names = mocap.sequences_of(subject)
    clips = [mocap.clip(n) for n in names]
    good = np.concatenate([c.positions[~c.glitch] for c in clips])
    sample = good[np.linspace(0, len(good) - 1, min(len(good), SUBJECT_SAMPLE_FRAMES)).astype(int)]
    subj = fit_subject(body, sample, mocap.joint_names, iterations=subject_iterations)
    rotmats, transl, error, glitch = [], [], [], []
    for clip in clips:
        fit = fit_sequence(body, clip.positions, clip.glitch, mocap.joint_names, subj, iterations=sequence_iterations)
        rotmats.append(fit.rotmats.numpy())
        transl.append(fit.translation.numpy())
        error.append(fit.error.numpy())
        glitch.append(clip.glitch)
        if progress is not None:
            progress.update(len(clip.glitch))
    return dict(format=np.int64(FIT_FORMAT), mocap_md5=np.str_(mocap.md5()), anny_version=np.str_(body.version),
                subject=np.str_(subject), shape=subj.shape.numpy(), offsets=subj.offsets.numpy(),
                seq_names=np.array(names), seq_len=np.array([len(c.glitch) for c in clips], dtype=np.int64),
                split=np.array([mocap.seq_split[mocap.seq_names.index(n)] for n in names]),
                rotmats=np.concatenate(rotmats).astype(np.float32), translation=np.concatenate(transl),
                error=np.concatenate(error).astype(np.float32), glitch=np.concatenate(glitch))


def fit_report(files: list[dict]) -> dict:
    """Fit error in mm (mean, p95) per split and joint group over non-glitch frames."""
    report = {}
    for split in ("train", "val", "test", "all"):
        errs = []
        for data in files:
            frame_split = np.repeat(data["split"], data["seq_len"])
            keep = ~data["glitch"] & ((frame_split == split) if split != "all" else True)
            errs.append(data["error"][keep])
        err = np.concatenate(errs) * 1000 if errs else np.zeros((0, len(CMU_TO_ANNY)))
        if len(err) == 0:
            continue
        row = {"frames": int(len(err)), "mean_mm": float(err.mean()), "p95_mm": float(np.percentile(err, 95))}
        for group, idx in JOINT_GROUPS.items():
            row[f"{group}_mean_mm"] = float(err[:, list(idx)].mean())
            row[f"{group}_p95_mm"] = float(np.percentile(err[:, list(idx)], 95))
        report[split] = row
    return report


def run_prepare(mocap_path=None, cache_dir=None, subjects: list[str] | None = None, force: bool = False,
                subject_iterations: int = SUBJECT_ITERATIONS, sequence_iterations: int = SEQUENCE_ITERATIONS,
                quiet: bool = False) -> dict:
    """Fit every (or the listed) subject(s) not yet in the cache; return the fit report (also cache/report.json)."""
    from tqdm import tqdm

    mocap = CMUMocap(mocap_path) if mocap_path else CMUMocap()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    all_subjects = mocap.subjects()
    subjects = subjects or all_subjects
    unknown = [s for s in subjects if s not in all_subjects]
    if unknown:
        raise DataError(f"subject(s) {unknown} are not in {mocap.path}; available: {', '.join(all_subjects)}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the fit cache folder {cache_dir} ({e.strerror}); pass --cache DIR") from None
    body = AnnyBody()
    md5 = mocap.md5()
    todo = []
    for s in subjects:
        path = subject_file(cache_dir, s)
        if force or not path.exists():
            todo.append(s)
            continue
        try:
            check_fit_file(path, md5, body.version)
        except DataError:
            todo.append(s)          # stale or broken: refit it
    frames = sum(mocap.seq_len[mocap.seq_names.index(n)] for s in todo for n in mocap.sequences_of(s))
    t0 = time.time()
    with tqdm(total=frames, unit="frame", desc="fitting Anny to CMU", disable=quiet) as bar:
        for s in todo:
            bar.set_postfix(subject=s)
            data = prepare_subject(body, mocap, s, subject_iterations, sequence_iterations, progress=bar)
            write_npz(subject_file(cache_dir, s), **data)
    files = [check_fit_file(subject_file(cache_dir, s), md5, body.version) for s in subjects]
    report = {"cache": str(cache_dir), "subjects": subjects, "fitted_now": todo, "seconds": time.time() - t0,
              "iterations": {"subject": subject_iterations, "sequence": sequence_iterations},
              "error": fit_report(files)}
    if set(subjects) == set(all_subjects):
        write_json(report, cache_dir / "report.json")
    return report


@dataclass
class FitSet:
    """All fitted frames of some sequences, concatenated (F frames, K bones, Anny axes z up, metres):
    rotmats (F, K, 3, 3) world; translation (F, 3) root head; shape (F, S) the subject's; glitch (F,) bool;
    seq_names, seq_start, seq_len per sequence; subject_shapes {subject: (S,)}; seq_subject per sequence."""

    rotmats: np.ndarray
    translation: np.ndarray
    shape: np.ndarray
    glitch: np.ndarray
    seq_names: list[str]
    seq_start: np.ndarray
    seq_len: np.ndarray
    seq_subject: list[str]


def load_fits(split: str, mocap_path=None, cache_dir=None, sequences: list[str] | None = None) -> FitSet:
    """Fits of one split ('train', 'val', 'test') from the cache; a one-line DataError says what to run when
    they are missing or stale."""
    mocap = CMUMocap(mocap_path) if mocap_path else CMUMocap()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    names = mocap.names(split)
    if sequences is not None:
        names = [n for n in names if n in sequences]
        if not names:
            raise DataError(f"none of the sequences {sequences} is in the {split} split")
    subjects = list(dict.fromkeys(mocap.seq_subject[mocap.seq_names.index(n)] for n in names))
    missing = [s for s in subjects if not subject_file(cache_dir, s).exists()]
    if missing:
        raise DataError(f"no Anny fits for subject(s) {', '.join(missing)} in {cache_dir}; run `diffmesh prepare"
                        f"{' --cache ' + str(cache_dir) if cache_dir != default_cache_dir() else ''}` first")
    md5, version = mocap.md5(), anny.__version__
    parts = {k: [] for k in ("rotmats", "translation", "shape", "glitch")}
    seq_len, seq_subject, kept = [], [], []
    for s in subjects:
        data = check_fit_file(subject_file(cache_dir, s), md5, version)
        starts = np.concatenate([[0], np.cumsum(data["seq_len"])])
        for i, n in enumerate(str(x) for x in data["seq_names"]):
            if n not in names:
                continue
            a, b = starts[i], starts[i + 1]
            parts["rotmats"].append(data["rotmats"][a:b])
            parts["translation"].append(data["translation"][a:b])
            parts["glitch"].append(data["glitch"][a:b])
            parts["shape"].append(np.repeat(data["shape"][None], b - a, 0))
            seq_len.append(b - a)
            seq_subject.append(s)
            kept.append(n)
    seq_len = np.array(seq_len, dtype=np.int64)
    return FitSet(**{k: np.concatenate(v) for k, v in parts.items()}, seq_names=kept,
                  seq_start=np.concatenate([[0], np.cumsum(seq_len)[:-1]]), seq_len=seq_len, seq_subject=seq_subject)
