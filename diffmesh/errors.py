"""User-facing errors: each one is printed by the CLI as a single line that says what to do."""


class DiffMeshError(Exception):
    """Base class: a problem with the user's input, files or settings (not a bug)."""


class MissingFileError(DiffMeshError):
    """A required file (body model, checkpoint, dataset) is not where it should be."""


class CheckpointError(DiffMeshError):
    """A checkpoint is corrupt, truncated, or does not match the requested model."""


class UnsafePickleError(DiffMeshError):
    """A pickle tried to load something outside the allowed list."""


class DataError(DiffMeshError):
    """A data file is malformed (missing key, wrong shape) or a split is empty."""


class SettingsError(DiffMeshError, ValueError):
    """An option has a value the command cannot use (an unknown name, a combination that does not work). Also a
    ValueError, so callers of the Python API can catch it as the bad argument it is."""


class DeviceError(DiffMeshError):
    """The requested device is not available (e.g. --device cuda on a machine torch sees no GPU on)."""


class OutputExistsError(DiffMeshError):
    """An output (folder, run, report) already exists and the command was not told to replace or resume it."""


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler, container or Ray cancelling the job): raised in the main thread by the CLI's
    handler so that every cleanup (staging folder, temporary files, the keypoint worker) runs as for Ctrl-C. A
    BaseException, so `except Exception` never swallows it."""


def raise_terminated_on_sigterm():
    """Make SIGTERM raise `Terminated` in this (main) thread; returns the handler it replaced, or None off the main
    thread, where Python cannot install one. Used by the command and by `diffmesh batch`'s worker processes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)
