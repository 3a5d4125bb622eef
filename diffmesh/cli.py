"""The `diffmesh` command line. Errors in the user's input print one line and exit with status 2."""

import argparse
import sys

from .errors import DiffMeshError


def _setup(args: argparse.Namespace) -> None:
    import time

    from anny.paths import get_anny_cache_path

    t = time.time()
    from .body import load_body

    body = load_body("anny")
    print(f"Anny {body.version} ready ({body.num_vertices} vertices, cache {get_anny_cache_path()}, "
          f"{time.time() - t:.1f} s)")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    summary = run_demo(args.output, mocap=args.mocap, sequence=args.sequence, start=args.start, frames=args.frames,
                       iterations=args.iterations, force=args.force)
    print(f"demo: {summary['frames']} frames of CMU {args.sequence} on the Anny body, "
          f"fit error {summary['fit_error_mm']:.1f} mm")
    for f in summary["files"]:
        print(f"  wrote {f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffmesh", description="DiffMesh: smooth human meshes from video.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="build the Anny body cache once per machine (about a minute the first time)")
    p.set_defaults(func=_setup)

    p = sub.add_parser("demo", help="fit the Anny body to a CMU mocap clip; write result.npz and preview.png")
    p.add_argument("-o", "--output", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--mocap", default=None, help="path to cmu_30fps.npz (default: shared/data/mocap/cmu_30fps.npz)")
    p.add_argument("--sequence", default="14_06", help="CMU trial id, e.g. 14_06 (jumping jacks)")
    p.add_argument("--start", type=int, default=0, help="first frame of the clip")
    p.add_argument("--frames", type=int, default=64, help="number of frames (30 fps)")
    p.add_argument("--iterations", type=int, default=300, help="optimiser iterations of the body fit")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DiffMeshError as e:
        print(f"diffmesh: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"diffmesh: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffmesh: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
