"""A restricted unpickler for pickles from outside (SMPL, dataset files).

Only numpy arrays and dtypes, scipy.sparse matrices and plain containers may be built; anything
else (os.system, arbitrary classes) raises `UnsafePickleError` before it runs. Chumpy arrays, which
the original SMPL files contain, become numpy arrays without importing chumpy.
"""

import _compat_pickle
import io
import pickle
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


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Python 2 names (__builtin__, copy_reg) as Python 3 spells them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            import scipy.sparse

            return getattr(scipy.sparse, name)
        if module.startswith("chumpy"):
            return _ChumpyArray
        raise UnsafePickleError(
            f"refusing to load '{module}.{name}' from a pickle: only numpy, scipy.sparse and plain containers are allowed"
        )


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
