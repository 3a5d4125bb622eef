"""DiffMesh: motion-aware diffusion for human mesh recovery from video."""

__version__ = "0.1.0"
