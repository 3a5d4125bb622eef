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


def _prepare(args: argparse.Namespace) -> None:
    from .data.prepare import run_prepare

    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    report = run_prepare(args.mocap, args.cache, subjects, force=args.force,
                         subject_iterations=args.subject_iterations, sequence_iterations=args.sequence_iterations)
    print(f"fits in {report['cache']} ({len(report['fitted_now'])} subject(s) fitted now, "
          f"{report['seconds']:.0f} s)")
    print(f"{'split':6} {'frames':>7} {'mean':>6} {'p95':>6} {'legs':>6} {'spine':>6} {'arms':>6}   (mm, glitch frames excluded)")
    for split, r in report["error"].items():
        print(f"{split:6} {r['frames']:7d} {r['mean_mm']:6.1f} {r['p95_mm']:6.1f} {r['legs_mean_mm']:6.1f} "
              f"{r['spine_head_mean_mm']:6.1f} {r['arms_mean_mm']:6.1f}")


def _train(args: argparse.Namespace) -> None:
    from .train import TrainSettings, run_training

    settings = TrainSettings(preset=args.preset, method=args.method, epochs=args.epochs,
                             steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, noise=not args.no_noise, val_clips=args.val_clips,
                             warmup_steps=args.warmup_steps)
    out = args.out or f"runs/{args.preset}_{args.method}"
    summary = run_training(out, settings, device=args.device, resume=args.resume, mocap_path=args.mocap,
                           cache_dir=args.cache, threads=args.threads, splits=tuple(args.splits.split(",")),
                           sequences=args.sequences.split(",") if args.sequences else None)
    if summary["rank"] > 0:
        return
    print(f"trained {args.method} ({summary['parameters']:,} parameters, {summary['steps']} steps): best val MPJPE "
          f"{summary['best_val_mpjpe_mm']:.1f} mm; checkpoints in {out}/best.pt and {out}/last.pt")


def _eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .evaluate import format_table, run_eval, write_json

    if args.json and Path(args.json).exists() and not args.force:
        raise ValueError(f"{args.json} exists; pass --force to replace it or choose another --json path")
    report = run_eval(args.checkpoints, split=args.split, limit=args.limit, noise=not args.no_noise,
                      device=args.device, with_vertices=not args.no_vertices, mocap_path=args.mocap,
                      cache_dir=args.cache)
    print(format_table(report))
    if args.json:
        write_json(report, Path(args.json))
        print(f"wrote {args.json}")


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

    p = sub.add_parser("prepare", help="fit the Anny body to every CMU mocap sequence and cache the fits")
    p.add_argument("--mocap", default=None, help="path to cmu_30fps.npz (default: shared/data/mocap/cmu_30fps.npz)")
    p.add_argument("--cache", default=None, help="fit cache folder (default: $DIFFMESH_CACHE or ~/.cache/diffmesh, "
                                                 "subfolder cmu_anny_fits)")
    p.add_argument("--subjects", default=None, help="comma-separated subject ids (default: all)")
    p.add_argument("--force", action="store_true", help="refit subjects already in the cache")
    p.add_argument("--subject-iterations", type=int, default=800, help=argparse.SUPPRESS)
    p.add_argument("--sequence-iterations", type=int, default=600, help=argparse.SUPPRESS)
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model on synthetic 2D clips of the CMU fits (run `prepare` first)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"], help="model size (default: tiny, "
                   "about an hour on 2 CPU cores)")
    p.add_argument("--method", default="diffmesh", choices=["diffmesh", "baseline1", "baseline2", "perframe"])
    p.add_argument("--out", default=None, help="run folder (default: runs/PRESET_METHOD)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-noise", action="store_true", help="train on exact 2D keypoints (no detector noise)")
    p.add_argument("--val-clips", type=int, default=96, help="val clips scored after every epoch")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--mocap", default=None, help="path to cmu_30fps.npz")
    p.add_argument("--cache", default=None, help="fit cache folder (as for `prepare`)")
    p.add_argument("--splits", default="train,val", help=argparse.SUPPRESS)      # tests: other data
    p.add_argument("--sequences", default=None, help=argparse.SUPPRESS)
    p.add_argument("--warmup-steps", type=int, default=200, help="linear learning-rate warm-up")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="score checkpoints on the CMU test split: MPJPE, PA-MPJPE, MPVE, ACC-ERR, time")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: the shipped weights)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=None, help="score this many evenly spaced clips (default: all)")
    p.add_argument("--no-noise", action="store_true", help="exact 2D input instead of the detector noise model")
    p.add_argument("--no-vertices", action="store_true", help="skip MPVE (faster)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--mocap", default=None, help="path to cmu_30fps.npz")
    p.add_argument("--cache", default=None, help="fit cache folder (as for `prepare`)")
    p.set_defaults(func=_eval)
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
