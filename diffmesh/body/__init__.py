"""Body models behind one interface (`BodyModel`): Anny (open default) and SMPL (user-supplied)."""

from .base import H36M_FLIP, H36M_JOINT_NAMES, H36M_PARENTS, BodyModel, BodyOutput, Skeleton

BODY_NAMES = ("anny", "smpl")


def load_body(name: str = "anny", smpl_path: str | None = None) -> BodyModel:
    """Build a body model by name.

    Args:
        name: 'anny' (default, offline) or 'smpl' (needs `smpl_path`: the folder holding SMPL_NEUTRAL.pkl
            and J_regressor_h36m.npy, or the .pkl itself).
    """
    if name == "anny":
        from .anny_body import AnnyBody

        return AnnyBody()
    if name == "smpl":
        from ..errors import MissingFileError
        from .smpl import SMPLBody

        if smpl_path is None:
            raise MissingFileError(
                "--body smpl needs --smpl-path: the folder with SMPL_NEUTRAL.pkl and J_regressor_h36m.npy "
                "(register at https://smpl.is.tue.mpg.de to download SMPL)"
            )
        return SMPLBody(smpl_path)
    from ..errors import SettingsError

    raise SettingsError(f"unknown body model '{name}'; choose one of {BODY_NAMES}")


__all__ = ["BodyModel", "BodyOutput", "Skeleton", "load_body", "BODY_NAMES", "H36M_JOINT_NAMES",
           "H36M_PARENTS", "H36M_FLIP"]
