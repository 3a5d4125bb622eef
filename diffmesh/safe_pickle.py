"""Restricted unpicklers for pickles from outside (SMPL, dataset files).

Only numpy arrays and dtypes, scipy.sparse matrices and plain containers may be built; anything
else (os.system, arbitrary classes) raises `UnsafePickleError` before it runs. Chumpy arrays, which
the original SMPL files contain, become numpy arrays without importing chumpy.

`safe_load_joblib` reads the joblib dumps of VIBE/TCMR/MPS-Net/GLoT (`3dpw_test_db.pt`, ...) under the same
rules. joblib.load itself cannot be restricted: it unpickles object arrays with a plain `pickle.load`, so the
joblib container (an optional gzip/bz2/xz/lzma/zlib wrapper, array payloads written between pickle opcodes) is
read here; joblib is not needed to read.

Corrupt files (a flipped bit, a cut, bytes inserted) must end in `DataError`, never in a traceback or a huge
allocation, so sizes are checked against the file before anything is allocated:
- a plain pickle's opcodes are walked first (`pickletools.genops`, which reads every counted string, bytes or
  long from the data itself): a mutated length fails there instead of making the C unpickler allocate it;
- the allowed constructors that take a size (`bytearray(n)`, `numpy.ndarray(shape)`, numpy's `_reconstruct`)
  may not ask for more bytes than the file holds;
- `_codecs.encode` (how protocol 2 stores bytes) accepts only the text encodings pickles use;
- a joblib array's bytes are read in bounded chunks, so a mutated shape fails when the data runs out.
"""

import _compat_pickle
import bz2
import codecs
import gzip
import io
import lzma
import pickle
import pickletools
import struct
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
    ("copyreg", "_reconstructor"),
}
# Constructors that get a size from the file: replaced by checked versions (`_sized_constructors`).
_SIZED = {("builtins", "bytearray"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
          ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}
_PICKLE_ENCODINGS = {codecs.lookup(e).name for e in ("latin1", "utf-8", "ascii")}
# Errors a corrupt file can raise inside the unpicklers and numpy; each becomes one DataError line.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, LookupError,
            UnicodeError, OverflowError, MemoryError, RecursionError, SystemError)
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


def _nbytes(shape, dtype) -> int:
    """Bytes an array of `shape` and `dtype` (as a pickle gives them) would take; a DataError for nonsense."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        raise DataError(f"an array shape {dims!r} in the file is not a list of sizes")
    return int(np.prod(dims, dtype=object)) * np.dtype(dtype).itemsize


def _check_size(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise DataError(f"the file asks for a {what} of {n:,} bytes but holds only {limit:,}; it is corrupt")


def _sized_constructors(limit: int) -> dict:
    """The `_SIZED` callables, refusing any object larger than `limit` bytes (the file's size)."""

    def check(n: int, what: str) -> None:
        _check_size(n, limit, what)

    def checked_bytearray(*args):
        if args and isinstance(args[0], (int, np.integer)):
            check(int(args[0]), "byte array")
        return bytearray(*args)

    class CheckedNdarray(np.ndarray):
        """numpy.ndarray as the pickle names it: a class (numpy's `_reconstruct` gets it as the subtype), whose
        direct construction is size-checked and gives a plain array."""

        def __new__(cls, shape, dtype=float, *args, **kwargs):
            check(_nbytes(shape, dtype), "numpy array")
            return np.ndarray(shape, dtype, *args, **kwargs)

    def checked_reconstruct(subtype, shape, dtype):
        check(_nbytes(shape, dtype), "numpy array")
        return np.ndarray.__new__(np.ndarray if subtype is CheckedNdarray else subtype, shape, dtype)

    def checked_encode(obj, encoding="utf-8", errors="strict"):
        if not isinstance(encoding, str) or codecs.lookup(encoding).name not in _PICKLE_ENCODINGS:
            raise DataError(f"the file encodes bytes as {encoding!r}, which no pickle writer uses; it is corrupt")
        return codecs.encode(obj, encoding, errors)

    return {("builtins", "bytearray"): checked_bytearray, ("numpy", "ndarray"): CheckedNdarray,
            ("numpy.core.multiarray", "_reconstruct"): checked_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): checked_reconstruct, ("_codecs", "encode"): checked_encode}


def _allowed_class(module: str, name: str, base_find_class, sized: dict | None = None):
    # Python 2 names (__builtin__, copy_reg) as Python 3 spells them.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _SIZED:
        if sized is None:
            raise UnsafePickleError(f"'{module}.{name}' needs the file's size to be checked")
        return sized[(module, name)]
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
    """The C unpickler restricted as above; `limit` bounds the size of any object a constructor builds (bytes).
    Walk the opcodes first (`check_opcodes`) when the data is untrusted: the C unpickler allocates a counted
    string or bytes object before it knows the data is there."""

    def __init__(self, file, *, limit: int, **kwargs):
        super().__init__(file, **kwargs)
        self._sized = _sized_constructors(limit)

    def find_class(self, module: str, name: str):
        return _allowed_class(module, name, super().find_class, self._sized)


def check_opcodes(data: bytes) -> None:
    """Walk a pickle's opcodes without building anything: a truncated or mutated counted length, an unknown
    opcode or a missing STOP raises ValueError here (pickletools reads each argument from `data` itself)."""
    for _ in pickletools.genops(data):
        pass


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
        check_opcodes(data)
        obj = _convert_chumpy(RestrictedUnpickler(io.BytesIO(data), encoding="latin1", limit=len(data)).load())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except DataError as e:
        raise DataError(f"{path}: {e}; download it again") from None
    except _CORRUPT as e:
        raise DataError(f"{path} is truncated or not a valid pickle ({type(e).__name__}: {str(e)[:80]}); "
                        "download it again") from None
    return obj


# ---------------------------------------------------------------- joblib dumps

class _JoblibArray:
    """Stands in for joblib.numpy_pickle.NumpyArrayWrapper: the array's metadata; its bytes follow in the file."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class _ChunkedReader:
    """A stream whose read(n) reads at most 16 MB at a time: Python's buffered and compressed readers allocate n
    bytes before reading, which a corrupt length would make huge."""

    def __init__(self, fh, chunk: int = 1 << 24):
        self.fh, self.chunk = fh, chunk

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.fh.read()
        parts, left = [], n
        while left > 0:
            part = self.fh.read(min(left, self.chunk))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def readline(self) -> bytes:
        return self.fh.readline()

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _load_bytearray8(self) -> None:
    """BYTEARRAY8 with its length checked against the file before the array is allocated."""
    (n,) = struct.unpack("<Q", self.read(8))
    _check_size(n, self.limit, "byte array")
    data = self.read(n)
    if len(data) != n:
        raise EOFError("bytearray8: the data ends early")
    self.append(bytearray(data))


class _RestrictedStreamUnpickler(pickle._Unpickler):
    """The pure-python unpickler, restricted, for a pickle inside a stream (a joblib object array), whose opcodes
    cannot be walked first: it reads each counted argument before building it, so a mutated length fails at the
    end of the data instead of being allocated."""

    dispatch = pickle._Unpickler.dispatch.copy()
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def __init__(self, fh, sized: dict, limit: int):
        super().__init__(fh, encoding="latin1")
        self._sized, self.limit = sized, limit

    def find_class(self, module: str, name: str):
        return _allowed_class(module, name, super().find_class, self._sized)


class _RestrictedJoblibUnpickler(_RestrictedStreamUnpickler):
    """The restricted pure-python unpickler (its opcode table can be extended) that replaces each joblib array
    placeholder by the array read from the bytes that follow it, as joblib's own NumpyUnpickler does."""

    dispatch = _RestrictedStreamUnpickler.dispatch.copy()

    def __init__(self, fh, limit: int):
        super().__init__(fh, _sized_constructors(limit), limit)
        self.fh = fh

    def find_class(self, module: str, name: str):
        if module == "joblib.numpy_pickle" and name == "NumpyArrayWrapper":
            return _JoblibArray
        if module == "joblib.numpy_pickle" and name in ("NDArrayWrapper", "ZNDArrayWrapper"):
            raise DataError("this joblib file was written by joblib < 0.10 (arrays in side files); re-save it with "
                            "a current joblib: joblib.dump(joblib.load(path), path)")
        if (module, name) == ("numpy", "memmap"):
            return np.memmap  # named as the array's subclass only; never constructed here
        return super().find_class(module, name)

    def load_build(self):
        super().load_build()
        if isinstance(self.stack[-1], _JoblibArray):
            self.stack.append(self._read_array(self.stack.pop()))

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, meta: _JoblibArray) -> np.ndarray:
        dtype = np.dtype(meta.dtype)
        shape = tuple(int(s) for s in meta.shape)
        nbytes = _nbytes(shape, dtype)
        if dtype.hasobject:                         # joblib pickles object arrays inline: restricted here too
            return _RestrictedStreamUnpickler(self.fh, self._sized, self.limit).load()
        if getattr(meta, "numpy_array_alignment_bytes", None) is not None:
            pad = self.fh.read(1)
            if len(pad) != 1:
                raise EOFError("array padding")
            self.fh.read(pad[0])
        count = nbytes // max(dtype.itemsize, 1)
        data = self.fh.read(nbytes)                 # a BytesIO or a _ChunkedReader: never allocates nbytes up front
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
            limit = max(path.stat().st_size, len(fh.getbuffer()) if isinstance(fh, io.BytesIO) else 0)
            if not isinstance(fh, (io.BytesIO, io.BufferedReader)):
                limit = 64 * limit                   # gzip, bz2, xz: the stream's size is known only when read
            if not isinstance(fh, io.BytesIO):
                fh = _ChunkedReader(fh)
            obj = _convert_chumpy(_RestrictedJoblibUnpickler(fh, limit).load())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except DataError:
        raise
    except _CORRUPT + (OSError, zlib.error, lzma.LZMAError) as e:
        raise DataError(f"{path} is truncated or not a valid joblib file ({type(e).__name__}: {str(e)[:80]}); "
                        "copy or download it again") from None
    return obj
