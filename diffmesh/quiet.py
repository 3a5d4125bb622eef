"""Silence the native libraries' start-up chatter (warp's device greeting and its missing-CUDA notice on CPU
machines, TensorFlow Lite's and MediaPipe's absl log lines), which is noise in a command's output. Python
exceptions still propagate; only what C/C++ code writes to file descriptor 2 while the block runs is dropped.
Set DIFFMESH_VERBOSE=1 to see it."""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    if os.environ.get("DIFFMESH_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)
