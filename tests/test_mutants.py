"""Seeded corruptions of every outside file format we read (a VIBE/TCMR joblib database, plain and gzip-compressed;
a MotionBERT mesh pickle; an SMPL model pickle; a diffmesh checkpoint): bit flips, byte runs, cuts and insertions.
Each mutant must load or give the one-line error (a DiffMeshError), never a traceback, and must not make the
reader allocate far more memory than the file holds (sizes are checked before anything is allocated)."""

import pickle
import pickletools
import tracemalloc

import joblib
import numpy as np
import pytest

from diffmesh.body.smpl import SMPLBody
from diffmesh.checkpoint import read_checkpoint
from diffmesh.data.databases import read_database, read_mesh_pickle
from diffmesh.errors import DiffMeshError
from diffmesh.paths import DEFAULT_CHECKPOINT
from paper_files import SMPL_PARENTS, mesh_split, vibe_db


def mutate(data: bytes, rng: np.random.Generator, positions: np.ndarray | None = None) -> bytes:
    """One mutant: 1-8 bit flips, a run of 1-16 random or 0xFF bytes, a cut, or 1-16 inserted bytes; at a random
    place, or (half the time, when `positions` are given) at one of them, e.g. a pickle opcode."""
    b = bytearray(data)

    def where() -> int:
        if positions is not None and rng.random() < 0.5:
            return int(min(len(b) - 1, rng.choice(positions) + rng.integers(0, 9)))
        return int(rng.integers(len(b)))

    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            b[where()] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        i, n = where(), int(rng.integers(1, 17))
        b[i:i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes() if rng.random() < 0.5 else b"\xff" * n
    elif kind == 2:
        b = b[:where()]
    else:
        i = where()
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    return bytes(b)


def _small_smpl(folder) -> None:
    """An SMPL model pickle with the real keys, dtypes and containers (numpy, scipy.sparse; protocol 2 as the
    released files) but 40 vertices, so hundreds of mutants load in seconds (the reader then refuses the vertex
    count in one line, as it must)."""
    import scipy.sparse

    rng = np.random.default_rng(0)
    V = 40
    data = {"v_template": rng.normal(0, 0.3, (V, 3)), "shapedirs": rng.normal(0, 0.01, (V, 3, 10)),
            "posedirs": rng.normal(0, 1e-3, (V, 3, 207)), "J_regressor": scipy.sparse.csc_matrix(rng.random((24, V))),
            "weights": rng.random((V, 24)), "kintree_table": np.array([[4294967295] + SMPL_PARENTS[1:],
                                                                       list(range(24))]),
            "f": rng.integers(0, V, (60, 3)).astype(np.uint32), "bs_style": "lbs"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(data, protocol=2))
    np.save(folder / "J_regressor_h36m.npy", rng.random((17, 6890)).astype(np.float32) * 0)


def _opcode_positions(data: bytes) -> np.ndarray:
    return np.array([pos for _, _, pos in pickletools.genops(data)])


def _formats(tmp_path):
    """(name, original bytes, where a mutant goes, reader of that path, mutation positions, count)."""
    rng = np.random.default_rng(0)
    db = tmp_path / "3dpw_test_db.pt"
    joblib.dump(vibe_db([6, 4], 14, 14, True, rng, feature_dim=16), db)
    dbz = tmp_path / "3dpw_train_db.pt"
    joblib.dump(vibe_db([5, 3], 14, 14, True, rng, feature_dim=8), dbz, compress=("gzip", 3))
    mb = tmp_path / "mesh_det_pw3d.pkl"
    mb.write_bytes(pickle.dumps({"train": mesh_split([5, 3], rng), "test": mesh_split([4], rng)}))
    smpl = tmp_path / "smpl"
    _small_smpl(smpl)
    smpl_pkl = smpl / "SMPL_NEUTRAL.pkl"
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(DEFAULT_CHECKPOINT.read_bytes())
    return [
        ("joblib database", db, lambda p: read_database(p, feature_dim=16), None, 150),
        ("gzip joblib database", dbz, lambda p: read_database(p, feature_dim=8), None, 50),
        ("MotionBERT pickle", mb, read_mesh_pickle, _opcode_positions(mb.read_bytes()), 150),
        ("SMPL pickle", smpl_pkl, lambda p: SMPLBody(p.parent), _opcode_positions(smpl_pkl.read_bytes()), 120),
        ("checkpoint", ckpt, read_checkpoint, None, 40),
    ]


def test_every_mutant_loads_or_gets_the_one_line_error(tmp_path):
    escaped, outcomes = [], {}
    for name, path, read, positions, count in _formats(tmp_path):
        original = path.read_bytes()
        if name != "SMPL pickle":                    # the small SMPL file is refused for its vertex count
            read(path)                               # the original loads
        loaded = 0
        for seed in range(count):
            mutant = mutate(original, np.random.default_rng([seed, len(name)]), positions)
            path.write_bytes(mutant)
            tracemalloc.start()
            try:
                read(path)
                loaded += 1
            except DiffMeshError as e:
                assert "\n" not in str(e), (name, seed, str(e))
            except BaseException as e:              # noqa: BLE001 - what the test is looking for
                escaped.append(f"{name} #{seed}: {type(e).__name__}: {str(e)[:80]}")
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < 64e6 + 20 * len(original), f"{name} #{seed} allocated {peak / 1e6:.0f} MB"
        path.write_bytes(original)
        outcomes[name] = loaded
    assert not escaped, escaped
    assert outcomes["joblib database"] and outcomes["MotionBERT pickle"]    # mutants that still load: the payload


@pytest.mark.parametrize("payload, message", [
    (b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x7f\x85R.", "byte array"),       # bytearray(2,130,706,432)
    (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R.", "numpy array"),                 # ndarray((2**30,))
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "encodes bytes"),
    (b"\x80\x02B\xff\xff\xff\x7fab.", "truncated"),                                       # BINBYTES of 2 GB, 2 given
])
def test_a_size_or_encoding_from_the_file_is_checked_before_use(tmp_path, payload, message):
    from diffmesh.safe_pickle import safe_load_pickle

    path = tmp_path / "x.pkl"
    path.write_bytes(payload)
    tracemalloc.start()
    with pytest.raises(DiffMeshError, match=message):
        safe_load_pickle(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16e6
