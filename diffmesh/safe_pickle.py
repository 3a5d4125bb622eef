"""Restricted unpicklers for pickles from outside (SMPL, dataset files).

Only numpy arrays and dtypes, scipy.sparse matrices and plain containers may be built; anything
else (os.system, arbitrary classes) raises `UnsafePickleError` before it runs. Chumpy arrays, which
the original SMPL files contain, become numpy arrays without importing chumpy.

`safe_load_joblib` reads the joblib dumps of VIBE/TCMR/MPS-Net/GLoT (`3dpw_test_db.pt`, ...) under the same
rules. joblib.load itself cannot be restricted: it unpickles object arrays with a plain `pickle.load`, so the
joblib container (an optional gzip/bz2/xz/lzma/zlib wrapper, array payloads written between pickle opcodes) is
read here; joblib is not needed to read.
"""

import _compat_pickle
import bz2
import gzip
import io
import lzma
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UnsafePickleError

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "object"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"), ("_codecs", "encode"),
}
_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse.coo",
                   "scipy.sparse._csc", "scipy.sparse._csr", "scipy.sparse._coo", "scipy.sparse.compressed",
                   "scipy.sparse._compressed", "scipy.sparse.base", "scipy.sparse._base")
_SPARSE_CLASSES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")


class _ChumpyArray:
    """Stands in for chumpy.Ch while unpickling; keeps only the numeric payload."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = self.state
        if isinstance(state, dict):
            for key in ("x", "a", "r"):
                if isinstance(state.get(key), np.ndarray):
                    return np.asarray(state[key])
            arrays = [v for v in state.values() if isinstance(v, np.ndarray)]
        elif isinstance(state, (tuple, list)):
            arrays = [v for v in state if isinstance(v, np.ndarray)]
        else:
            arrays = []
        if not arrays:
            raise UnsafePickleError("a chumpy array in the pickle holds no numpy data; re-export the file with numpy arrays")
        return max(arrays, key=lambda a: a.size)


def _allowed_class(module: str, name: str, base_find_class):
    # Python 2 names (__builtin__, copy_reg) as Python 3 spells them.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _ALLOWED:
        return base_find_class(module, name)
    if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
        import scipy.sparse

        return getattr(scipy.sparse, name)
    if module.startswith("chumpy"):
        return _ChumpyArray
    raise UnsafePickleError(
        f"refusing to load '{module}.{name}' from a pickle: only numpy, scipy.sparse and plain containers are allowed"
    )


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _allowed_class(module, name, super().find_class)


def _convert_chumpy(obj: Any) -> Any:
    if isinstance(obj, _ChumpyArray):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: _convert_chumpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert_chumpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert_chumpy(v) for v in obj)
    return obj


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle (Python 2 or 3) admitting only numpy/scipy.sparse/containers.

    Raises:
        UnsafePickleError: the pickle references anything else.
        DataError: the file is truncated or not a pickle.
    """
    data = Path(path).read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is truncated or not a valid pickle ({type(e).__name__}: {e}); download it again") from None
    return _convert_chumpy(obj)


# ---------------------------------------------------------------- joblib dumps

class _JoblibArray:
    """Stands in for joblib.numpy_pickle.NumpyArrayWrapper: the array's metadata; its bytes follow in the file."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class _RestrictedJoblibUnpickler(pickle._Unpickler):
    """The pure-python unpickler (its opcode table can be extended), restricted as above, that replaces each joblib
    array placeholder by the array read from the bytes that follow it, as joblib's own NumpyUnpickler does."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, fh):
        super().__init__(fh, encoding="latin1")
        self.fh = fh

    def find_class(self, module: str, name: str):
        if module == "joblib.numpy_pickle" and name == "NumpyArrayWrapper":
            return _JoblibArray
        if module == "joblib.numpy_pickle" and name in ("NDArrayWrapper", "ZNDArrayWrapper"):
            raise DataError("this joblib file was written by joblib < 0.10 (arrays in side files); re-save it with "
                            "a current joblib: joblib.dump(joblib.load(path), path)")
        if (module, name) == ("numpy", "memmap"):
            return np.memmap  # named as the array's subclass only; never constructed here
        return _allowed_class(module, name, super().find_class)

    def load_build(self):
        super().load_build()
        if isinstance(self.stack[-1], _JoblibArray):
            self.stack.append(self._read_array(self.stack.pop()))

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, meta: _JoblibArray) -> np.ndarray:
        dtype = np.dtype(meta.dtype)
        shape = tuple(int(s) for s in meta.shape)
        if dtype.hasobject:                         # joblib pickles object arrays inline: restricted here too
            return RestrictedUnpickler(self.fh, encoding="latin1").load()
        if getattr(meta, "numpy_array_alignment_bytes", None) is not None:
            pad = self.fh.read(1)
            if len(pad) != 1:
                raise EOFError("array padding")
            self.fh.read(pad[0])
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        data = self.fh.read(nbytes)
        if len(data) != nbytes:
            raise EOFError(f"array data: expected {nbytes} bytes, got {len(data)}")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        array = array.reshape(shape[::-1]).T if meta.order == "F" else array.reshape(shape)
        return array.astype(dtype.newbyteorder("="), copy=False) if not dtype.isnative else array


def _open_decompressed(raw: io.BufferedIOBase, path: Path):
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00") or head.startswith(b"\x5d\x00\x00"):
        return lzma.LZMAFile(raw)
    if head[:1] == b"\x78":                      # joblib's compress=N: a bare zlib stream
        return io.BytesIO(zlib.decompress(raw.read()))
    if head.startswith(b"ZF"):                   # joblib's own zlib container: 'ZF', a 16-byte length, zlib data
        raw.read(18)
        return io.BytesIO(zlib.decompress(raw.read()))
    if head[:1] != b"\x80":
        raise DataError(f"{path} is neither a pickle nor a compressed joblib file; is it the right file?")
    return raw


def safe_load_joblib(path: str | Path) -> Any:
    """Load a joblib dump (compressed or not) admitting only numpy/scipy.sparse/containers, as `safe_load_pickle`.

    Raises:
        UnsafePickleError: the file references anything else (nothing is executed).
        DataError: the file is truncated, corrupt or not a joblib/pickle file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            fh = _open_decompressed(raw, path)
            obj = _RestrictedJoblibUnpickler(fh).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OSError, zlib.error, lzma.LZMAError) as e:
        raise DataError(f"{path} is truncated or not a valid joblib file ({type(e).__name__}: {str(e)[:80]}); "
                        "copy or download it again") from None
    return _convert_chumpy(obj)
