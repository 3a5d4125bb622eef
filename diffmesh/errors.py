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
