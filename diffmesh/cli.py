"""The `diffmesh` command line: one `_command(args)` function per subcommand, then the parser. Errors in the user's
input (DiffMeshError) print one line and exit with status 2; any other exception is a bug and keeps its traceback."""

import argparse
import signal
import sys

from .errors import DiffMeshError, OutputExistsError, Terminated, raise_terminated_on_sigterm
from .paths import DEMO_VIDEO


def _setup(args: argparse.Namespace) -> None:
    import time

    from anny.paths import get_anny_cache_path

    t = time.time()
    from .body import load_body

    body = load_body("anny")
    print(f"Anny {body.version} ready ({body.num_vertices} vertices, cache {get_anny_cache_path()}, "
          f"{time.time() - t:.1f} s)")
    from .app.vendor import ensure_vendored

    try:
        print(f"the app's 3D viewer is in {ensure_vendored()}")
    except DiffMeshError as e:                  # everything but `diffmesh app` works without it
        print(f"warning: {e}", file=sys.stderr)


def _app(args: argparse.Namespace) -> None:
    from .app.server import serve

    if args.max_upload_mb <= 0:
        raise DiffMeshError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    serve(args.host, args.port, args.max_upload_mb, args.device)


def _run(args: argparse.Namespace) -> None:
    from .pipeline import run_video

    summary = run_video(args.video, args.output, _run_settings(args))
    print("\n".join(summary.lines()))
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _run_settings(args: argparse.Namespace):
    from .pipeline import EXPORTS, RunSettings

    exports = tuple(e.strip() for e in args.export.split(",") if e.strip()) if args.export else EXPORTS
    return RunSettings(checkpoint=args.checkpoint, device=args.device, body=args.body, smpl_path=args.smpl_path,
                       focal=args.focal, render=not args.no_render, side_view=args.side_view, top_view=args.top_view,
                       exports=exports,
                       save_vertices=args.save_vertices, force=args.force, progress=not args.quiet,
                       resample=not args.no_resample, windows=args.windows, max_people=args.max_people,
                       person=args.person)


def _batch(args: argparse.Namespace) -> None:
    from .batch import find_jobs, run_batch, run_batch_ray

    if args.workers < 1 or args.cpus_per_video < 1:
        raise DiffMeshError(f"--workers and --cpus-per-video must be at least 1, got {args.workers} and "
                            f"{args.cpus_per_video}")
    jobs = find_jobs(args.inputs, args.list)
    if args.ray is None:
        report = run_batch(jobs, args.output, _run_settings(args), workers=args.workers, progress=not args.quiet)
    else:
        report = run_batch_ray(jobs, args.output, _run_settings(args), args.ray or None,
                               cpus_per_video=args.cpus_per_video, progress=not args.quiet)
    print("\n".join(report.lines()))
    if report.failed:
        raise DiffMeshError(f"{len(report.failed)} of {report.total} videos failed (their lines are in "
                            f"{args.output}/manifest.jsonl); fix them and run the same command again")


def _demo(args: argparse.Namespace) -> None:
    args.video = str(DEMO_VIDEO)
    _run(args)


def _prepare(args: argparse.Namespace) -> None:
    from .data.prepare import run_prepare

    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    report = run_prepare(args.mocap, args.cache, subjects, force=args.force and not args.render,
                         subject_iterations=args.subject_iterations, sequence_iterations=args.sequence_iterations)
    print(f"fits in {report['cache']} ({len(report['fitted_now'])} subject(s) fitted now, "
          f"{report['seconds']:.0f} s)")
    print(f"{'split':6} {'frames':>7} {'mean':>6} {'p95':>6} {'legs':>6} {'spine':>6} {'arms':>6}   (mm, glitch frames excluded)")
    for split, r in report["error"].items():
        print(f"{split:6} {r['frames']:7d} {r['mean_mm']:6.1f} {r['p95_mm']:6.1f} {r['legs_mean_mm']:6.1f} "
              f"{r['spine_head_mean_mm']:6.1f} {r['arms_mean_mm']:6.1f}")
    if args.render:
        from .render_set import RenderSettings, report_lines, run_render_set

        settings = RenderSettings(cameras=args.cameras, seed=args.render_seed, max_frames=args.max_frames)
        report = run_render_set(subjects, args.render_cache, args.cache, settings, workers=args.workers,
                                force=args.force, quiet=args.quiet, mocap_path=args.mocap)
        print("\n".join(report_lines(report)))


def _train(args: argparse.Namespace) -> None:
    from .train.cmu import TrainSettings, run_training

    settings = TrainSettings(preset=args.preset, method=args.method, epochs=args.epochs,
                             steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, noise=not args.no_noise, noise_model=args.noise_model,
                             val_clips=args.val_clips, warmup_steps=args.warmup_steps,
                             motion_form=args.motion_form, aux=args.aux, camera_model=args.camera_model,
                             data=args.data, keypoint_inputs=args.keypoint_inputs,
                             synthetic_share=args.synthetic_share, shape_std=args.shape_std, anchor=args.anchor)
    out = args.out or f"runs/{args.preset}_{args.method}"
    summary = run_training(out, settings, device=args.device, resume=args.resume, mocap_path=args.mocap,
                           cache_dir=args.cache, threads=args.threads, render_cache=args.render_cache)
    report_training(summary)


def report_training(summary: dict) -> None:
    """`diffmesh train`'s last line, printed by rank 0 only (under torchrun every rank returns a summary)."""
    if summary["rank"] > 0:
        return
    out = summary["out"]
    print(f"trained {summary['settings']['method']} ({summary['parameters']:,} parameters, {summary['steps']} steps): "
          f"best val MPJPE {summary['best_val_mpjpe_mm']:.1f} mm; checkpoints in {out}/best.pt and {out}/last.pt")


def _refuse_existing(path: str | None, force: bool) -> None:
    """An output file the user already has is kept unless --force."""
    from pathlib import Path

    if path and Path(path).exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force to replace it or choose another --json path")


def _write_report(report: dict, path: str | None) -> None:
    """The --json copy of a report, written atomically."""
    if path:
        from pathlib import Path

        from .outdir import write_json

        write_json(report, Path(path))
        print(f"wrote {path}")


def _eval(args: argparse.Namespace) -> None:
    _refuse_existing(args.json, args.force)
    if args.data == "renders" and args.feet:
        from .evaluation.feet import format_feet_report, run_feet_eval
        from .pipeline import RunSettings

        if len(args.checkpoints) > 1:
            raise DiffMeshError("--feet scores one checkpoint; give one (or none for the shipped default)")
        if args.split == "train":
            raise DiffMeshError("--feet scores the test split or the validation subjects (--split val)")
        report = run_feet_eval(args.checkpoints[0] if args.checkpoints else None, args.render_cache, args.limit,
                               RunSettings(device=args.device, windows=args.windows), args.split)
        print(format_feet_report(report))
    elif args.data == "renders":
        from .evaluation.renders import format_render_report, run_render_eval
        from .pipeline import RunSettings

        report = run_render_eval(args.checkpoints, args.render_cache, args.limit,
                                 RunSettings(device=args.device, windows=args.windows))
        print(format_render_report(report))
    else:
        report = _eval_synthetic(args)
    _write_report(report, args.json)


def _eval_synthetic(args: argparse.Namespace) -> dict:
    from .evaluation.cmu import format_table, run_eval

    report = run_eval(args.checkpoints, split=args.split, limit=args.limit, noise=not args.no_noise,
                      device=args.device, with_vertices=not args.no_vertices, mocap_path=args.mocap,
                      cache_dir=args.cache, noise_name=args.noise_model)
    print(format_table(report))
    return report


def _eval_video(args: argparse.Namespace) -> None:
    from .evaluation.real_video import JOINT_SETS, format_report, run_eval_video

    _refuse_existing(args.json, args.force)
    settings = {"device": args.device, "windows": args.windows, "resample": not args.no_resample}
    if args.people:
        from .evaluation.real_video_people import format_people_report, run_eval_video_people

        if len(args.checkpoints) > 1:
            raise DiffMeshError("--people scores one checkpoint; pass one file (or none for the shipped default)")
        report = run_eval_video_people(next(iter(args.checkpoints), None), cache=args.cache, settings=settings)
        print(format_people_report(report))
        _write_report(report, args.json)
        return
    report = run_eval_video(args.checkpoints, cache=args.cache, settings=settings)
    for joint_set in JOINT_SETS:
        print(format_report(report, joint_set) + "\n")
    _write_report(report, args.json)


def _paper_train(args: argparse.Namespace) -> None:
    from .train.paper import PaperTrainSettings, run_paper_training

    settings = PaperTrainSettings(
        setting=args.setting, preset=args.preset, method=args.method, frames=args.frames, steps=args.steps,
        denoiser_design=args.denoiser_design, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay, weight_decay=args.weight_decay,
        aux_weight=args.aux_weight, train_stride=args.train_stride, seed=args.seed, eval_limit=args.eval_limit,
        flip=not args.no_flip)
    out = args.out or f"runs/paper_{args.setting}_{args.method}"
    summary = run_paper_training(out, settings, args.data_dir, args.smpl_path, device=args.device, resume=args.resume,
                                 init_backbone=args.init_backbone, init_released=args.init_released, quiet=args.quiet)
    if summary["rank"] > 0:
        return
    print(f"trained {args.setting} ({summary['steps']} steps): best MPJPE {summary['best_mpjpe_mm']:.1f} mm; "
          f"checkpoints in {out}/best.pt and {out}/last.pt")


def _paper_eval(args: argparse.Namespace) -> None:
    from .evaluation.paper import format_report, run_paper_eval

    _refuse_existing(args.json, args.force)
    report = run_paper_eval(args.checkpoint, args.setting, args.data_dir, args.smpl_path, protocol=args.protocol,
                            device=args.device, limit=args.limit, eval_file=args.eval_file,
                            flip_test=not args.no_flip_test)
    print(format_report(report))
    _write_report(report, args.json)


def _bench(args: argparse.Namespace) -> None:
    from .bench import SETTINGS, BenchOptions, parse_list, run_bench
    from .model import PRESETS

    opts = BenchOptions(settings=parse_list(args.settings, SETTINGS, "setting"), quick=args.quick, device=args.device,
                        repeats=args.repeats, out=args.out, video=args.video, smpl_path=args.smpl_path,
                        threads=args.threads,
                        presets=parse_list(args.preset, tuple(PRESETS), "preset") if args.preset else None)
    run_bench(opts)
    if args.out:
        print(f"diffmesh bench: wrote {args.out}", file=sys.stderr)


DEVICES = ("cpu", "cuda")


def _run_options(p: argparse.ArgumentParser, default_output: str | None, batch: bool = False) -> None:
    from .body import BODY_NAMES
    from .windows import DEFAULT_WINDOWS, WINDOW_MODES

    p.add_argument("-o", "--output", required=default_output is None, default=default_output,
                   help=("root of the output folders, one per video, and of manifest.jsonl (may exist: a rerun "
                         "resumes)") if batch else "output folder (refused if it exists, unless --force)"
                   + (f"; default {default_output}" if default_output else ""))
    p.add_argument("--force", action="store_true", help="run every video again, replacing its folder" if batch
                   else "replace the output folder if it exists")
    p.add_argument("--checkpoint", default=None, help="model weights (default: the shipped DiffMesh tiny/Anny model)")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--body", default="anny", choices=BODY_NAMES, help="body model (smpl needs --smpl-path and "
                   "a checkpoint trained with SMPL)")
    p.add_argument("--smpl-path", default=None, help="folder with SMPL_NEUTRAL.pkl and J_regressor_h36m.npy")
    p.add_argument("--focal", type=float, default=None, help="focal length in pixels (default: the image diagonal)")
    p.add_argument("--no-render", action="store_true", help="skip overlay.mp4 (faster)")
    p.add_argument("--side-view", action="store_true", help="add a side view of the mesh beside the overlay")
    p.add_argument("--top-view", action="store_true", help="add the world seen from above beside the overlay, "
                   "each person's path growing (static cameras; topview.png has the whole path)")
    p.add_argument("--export", default=None, help="comma-separated subset of npz,glb,bvh,topview (default: all; topview.png only where a ground "
                   "is found)")
    p.add_argument("--save-vertices", action="store_true", help="also store per-frame vertices in result.npz")
    p.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_MODES,
                   help="how the model's 16-frame windows cover a video: independent (disjoint), blended (half "
                   "overlap, cross-faded; default) or chained (blended, each window's DiffMesh chain started from "
                   "the next window's state; experimental, the shipped weights were not trained for it)")
    p.add_argument("--no-resample", action="store_true", help="run the model on the video's own frames instead "
                   "of resampling each person's keypoints to the model's training rate (30 fps)")
    p.add_argument("--max-people", type=int, default=0, metavar="N",
                   help="0 (default): everyone found, each followed in a crop of their own by MediaPipe's landmarker; "
                   "N > 1: the N most prominent people; 1: one person, MediaPipe's single-person tracker (about "
                   "twice as fast; docs/people.md)")
    p.add_argument("--person", type=int, default=None, metavar="ID",
                   help="only the person with this id (0 = the most prominent; ids as --max-people 0 numbers them)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _data_options(p: argparse.ArgumentParser) -> None:
    """Where the CMU mocap and its Anny fits are (train, eval)."""
    p.add_argument("--mocap", default=None, help="path to cmu_30fps.npz (default: the bundled "
                   "diffmesh/assets/mocap/cmu_30fps.npz)")
    p.add_argument("--cache", default=None, help="fit cache folder (default: $DIFFMESH_CACHE or ~/.cache/diffmesh, "
                                                 "subfolder cmu_anny_fits)")


def _add_video_commands(sub) -> None:
    p = sub.add_parser("setup", help="build the Anny body cache once per machine (about a minute the first time)")
    p.set_defaults(func=_setup)

    p = sub.add_parser("run", help="a video in, a mesh sequence out: result.npz, mesh.glb, motion.bvh, overlay.mp4")
    p.add_argument("video", help="any video file FFmpeg reads")
    _run_options(p, default_output=None)
    p.set_defaults(func=_run)

    p = sub.add_parser("batch", help="many videos (files, folders, globs, --list) through `run`, one output folder "
                       "each under -o, resumable, on --workers local processes (docs/batch.md)")
    p.add_argument("inputs", nargs="*", help="video files, folders (searched recursively) or glob patterns")
    p.add_argument("--list", default=None, help="a text file naming one input per line (relative to its folder)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1; each gets its share "
                   "of the cores)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS", help="run the videos as Ray "
                   "tasks instead: on the cluster at ADDRESS (HOST:PORT, or 'auto'), or on a Ray instance started "
                   "on this machine when no address is given; -o must be a folder every node sees")
    p.add_argument("--cpus-per-video", type=int, default=1, help="--ray: CPUs each video's task asks for "
                   "(default 1)")
    _run_options(p, default_output=None, batch=True)
    p.set_defaults(func=_batch)

    p = sub.add_parser("demo", help=f"`run` on the bundled sample video ({DEMO_VIDEO.name})")
    _run_options(p, default_output="outputs/demo")
    p.set_defaults(func=_demo)

    _add_app(sub)


def _add_cmu_commands(sub) -> None:
    from .model import METHODS, MOTION_FORMS, PRESETS

    p = sub.add_parser("prepare", help="fit the Anny body to every CMU mocap sequence and cache the fits")
    _data_options(p)
    p.add_argument("--subjects", default=None, help="comma-separated subject ids (default: all)")
    p.add_argument("--force", action="store_true", help="refit subjects already in the cache (with --render: "
                   "re-render instead, fits are kept)")
    p.add_argument("--subject-iterations", type=int, default=800, help="optimiser steps of each subject's fit")
    p.add_argument("--sequence-iterations", type=int, default=600, help="optimiser steps of each sequence's fit")
    p.add_argument("--render", action="store_true", help="then render the fits from random cameras and run "
                   "MediaPipe on them (docs/data.md); resumes where it stopped; with --force, re-render")
    p.add_argument("--cameras", type=int, default=4, help="--render: cameras per sequence")
    p.add_argument("--render-seed", type=int, default=0, help="--render: seed of the cameras and scenes")
    p.add_argument("--render-cache", default=None, help="--render: folder of the renders (default: "
                   "$DIFFMESH_CACHE or ~/.cache/diffmesh, subfolder cmu_renders)")
    p.add_argument("--workers", type=int, default=2, help="--render: worker processes (one per core)")
    p.add_argument("--max-frames", type=int, default=None, help="--render: only the first frames of each sequence")
    p.add_argument("--quiet", action="store_true", help="--render: no progress bar")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model on synthetic 2D clips of the CMU fits (run `prepare` first)")
    p.add_argument("--preset", default="tiny", choices=tuple(PRESETS), help="model size (default: tiny, "
                   "about an hour on 2 CPU cores)")
    p.add_argument("--method", default="diffmesh", choices=METHODS)
    p.add_argument("--out", default=None, help="run folder (default: runs/PRESET_METHOD)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-noise", action="store_true", help="train on exact 2D keypoints (no detector noise)")
    _noise_model_option(p)
    p.add_argument("--val-clips", type=int, default=96, help="val clips scored after every epoch")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _data_options(p)
    p.add_argument("--warmup-steps", type=int, default=200, help="linear learning-rate warm-up")
    p.add_argument("--motion-form", default="paper", choices=MOTION_FORMS, help="DiffMesh's reverse "
                   "step: paper (Eq. 7, the step scaled by sqrt(beta), default) or residual (the shipped "
                   "checkpoints': beta cancels); docs/method.md")
    p.add_argument("--aux", default="frames", choices=("frames", "all", "off"), help="auxiliary loss on the "
                   "frames' conditions (default), on all N-1 (the shipped checkpoints'), or off")
    p.add_argument("--camera-model", default="sequence", choices=("sequence", "clip"), help="training cameras: "
                   "one per sequence as the test clips and renders have (default), or one aimed at each clip "
                   "(the shipped checkpoints')")
    p.add_argument("--data", default="synthetic", choices=("synthetic", "renders"), help="training clips: the "
                   "synthetic 2D of the fits (default) or the rendered MediaPipe set (`diffmesh prepare --render`)")
    _model_input_options(p)
    p.add_argument("--render-cache", default=None, help="--data renders: folder of the renders (default: "
                   "$DIFFMESH_CACHE or ~/.cache/diffmesh, subfolder cmu_renders)")
    p.add_argument("--synthetic-share", type=float, default=0.0, help="--data renders: this share of every batch "
                   "from synthetic clips of the same fits (new cameras, --noise-model's errors; for 2d+3d MediaPipe's "
                   "3D errors from the renders), e.g. 0.25; docs/data.md")
    p.add_argument("--shape-std", type=float, default=0.0, help="synthetic clips: half of them worn by a random "
                   "Anny body, shape logits N(0, this), e.g. 0.5 (0: the subject's own fitted body, default)")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="score checkpoints on the CMU test subjects: rendered and seen by MediaPipe "
                       "(default), or the synthetic split (--data synthetic: MPJPE, PA-MPJPE, MPVE, ACC-ERR, time)")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: the shipped weights)")
    p.add_argument("--data", default="renders", choices=("renders", "synthetic"), help="renders: the rendered test "
                   "split (`diffmesh prepare --render` first); synthetic: the fits with the synthetic 2D and noise")
    p.add_argument("--render-cache", default=None, help="--data renders: folder of the renders (default: "
                   "$DIFFMESH_CACHE or ~/.cache/diffmesh, subfolder cmu_renders)")
    from .windows import DEFAULT_WINDOWS, WINDOW_MODES

    p.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_MODES,
                   help="--data renders: the runs' --windows (see `run`)")
    p.add_argument("--feet", action="store_true", help="--data renders: foot skating and ground penetration "
                   "before and after the contact handling, against the true floor and contacts (docs/people.md)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split (--feet: val or test)")
    p.add_argument("--limit", type=int, default=None, help="score this many evenly spaced clips (default: all)")
    p.add_argument("--no-noise", action="store_true", help="exact 2D input instead of the detector noise model")
    _noise_model_option(p)
    p.add_argument("--no-vertices", action="store_true", help="skip MPVE (faster)")
    _report_options(p)
    _data_options(p)
    p.set_defaults(func=_eval)


def _model_input_options(p: argparse.ArgumentParser) -> None:
    """What a trained model reads and where its pose starts (train)."""
    from .model import ANCHORS, KEYPOINT_CHANNELS

    p.add_argument("--keypoint-inputs", default="2d+vis", choices=tuple(KEYPOINT_CHANNELS), help="what the model "
                   "reads per joint: 2D only, 2D + MediaPipe's visibility (default), or also MediaPipe's 3D world "
                   "landmarks (2d and 2d+3d need --data renders)")
    p.add_argument("--anchor", default="none", choices=ANCHORS, help="where the head's pose starts: the mean pose "
                   "(default) or mediapipe-3d, the IK of MediaPipe's world landmarks refined by a residual (needs "
                   "--keypoint-inputs 2d+3d); docs/method.md")


def _noise_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noise-model", default="hand-made", choices=("hand-made", "mediapipe"),
                   help="detector noise of the synthetic 2D: hand-made (the shipped weights' and the recorded "
                   "figures', default) or mediapipe (fitted to MediaPipe on the rendered set, docs/data.md)")


def _report_options(p: argparse.ArgumentParser) -> None:
    """The evaluation commands' --json report and device."""
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", default="cpu", choices=DEVICES)


def _model_options(p: argparse.ArgumentParser) -> None:
    """paper-train's model: size, method, f, N, Table 7's denoiser design."""
    from .model import DENOISER_DESIGNS, METHODS, PRESETS

    p.add_argument("--preset", default="paper", choices=tuple(PRESETS))
    p.add_argument("--method", default="diffmesh", choices=METHODS)
    p.add_argument("--frames", type=int, default=16, help="f, frames per clip (Table 6)")
    p.add_argument("--steps", type=int, default=30, help="N, diffusion steps (Table 6)")
    p.add_argument("--denoiser-design", default="cross", choices=DENOISER_DESIGNS,
                   help="Table 7: (c) cross (default), (b) two_self, (a) one_self")


def _add_paper_train(sub, paper_settings: list[str]) -> None:
    p = sub.add_parser("paper-train", help="train with SMPL on the standard databases as the paper did (Tables 2, 3, "
                       "5-8); see docs/reproduce.md")
    p.add_argument("setting", choices=paper_settings, help="which table's setting (files, input, protocol)")
    p.add_argument("--data-dir", required=True, help="folder holding the setting's database/pickle files")
    p.add_argument("--smpl-path", required=True, help="folder with SMPL_NEUTRAL.pkl and J_regressor_h36m.npy")
    p.add_argument("--out", default=None, help="run folder (default: runs/paper_SETTING_METHOD)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    _model_options(p)
    p.add_argument("--aux-weight", type=float, default=0.01, help="w4 of Eq. 10 (Table 8: 0 drops the auxiliary loss)")
    p.add_argument("--epochs", type=int, default=0, help="0: the setting's (60; the refinement settings 30)")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="0: the setting's (TCMR 500; MotionBERT one pass)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--lr-decay", type=float, default=0.98, help="learning-rate factor per epoch")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--train-stride", type=int, default=0, help="rows between training clips (0: databases 1, "
                   "MotionBERT pickles 8)")
    p.add_argument("--eval-limit", type=int, default=0, help="sequences scored after each epoch (0: all)")
    p.add_argument("--init-backbone", default=None, help="MotionBERT pretrained checkpoint (latest_epoch.bin) for "
                   "the DSTformer backbone")
    p.add_argument("--init-released", default=None, help="released DiffMesh checkpoint to start from (see "
                   "docs/reproduce.md for what maps)")
    p.add_argument("--no-flip", action="store_true", help="keypoint settings: no mirrored training clips and no flip "
                   "test while validating (both on by default, as in the released code)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_paper_train)


def _add_paper_commands(sub) -> None:
    from .data.paper_settings import PROTOCOLS, SETTINGS as PAPER_SETTINGS

    paper_settings = sorted(PAPER_SETTINGS)
    _add_paper_train(sub, paper_settings)

    p = sub.add_parser("paper-eval", help="score a paper-mode checkpoint on a setting's test file under the TCMR or "
                       "MotionBERT protocol, beside the paper's number")
    p.add_argument("checkpoint")
    p.add_argument("--setting", required=True, choices=paper_settings)
    p.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                   help="default: the protocol the paper's number follows")
    p.add_argument("--data-dir", required=True, help="folder holding the setting's evaluation file")
    p.add_argument("--eval-file", default=None, help="another file of the same kind to score (e.g. 3dpw_val_db.pt)")
    p.add_argument("--smpl-path", required=True, help="folder with SMPL_NEUTRAL.pkl and J_regressor_h36m.npy")
    p.add_argument("--limit", type=int, default=None, help="score only the first N sequences")
    p.add_argument("--no-flip-test", action="store_true", help="keypoint models: do not average with the mirrored "
                   "input's prediction (on by default, as MotionBERT and the released code)")
    _report_options(p)
    p.set_defaults(func=_paper_eval)


def _add_eval_video(sub) -> None:
    p = sub.add_parser("eval-video", help="score checkpoints on real video (the Pose2Sim multi-person demo, 4 "
                       "calibrated views) against a triangulated reference, beside MediaPipe's own 3D raw and filtered")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: the shipped weights)")
    p.add_argument("--cache", default=None, help="folder for the pose2sim wheel (fetched with pip on first use), the "
                   "demo's files and the cached reference (default: $DIFFMESH_CACHE or ~/.cache/diffmesh, "
                   "subfolder pose2sim)")
    from .windows import DEFAULT_WINDOWS, WINDOW_MODES

    p.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_MODES, help="the runs' --windows (see `run`)")
    p.add_argument("--no-resample", action="store_true", help="the runs' --no-resample (see `run`)")
    p.add_argument("--people", action="store_true", help="every person through `run --max-people 0`: per view and "
                   "person the tracks' coverage, identity switches and scores beside the single-person run's "
                   "(docs/people.md)")
    _report_options(p)
    p.set_defaults(func=_eval_video)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time DiffMesh against its baselines (Table 4), peer video heads (Table 9) and "
                       "the pipeline (per stage, growing videos) on this machine; one JSON object per line")
    p.add_argument("--settings", default="table4,table9,video,growth",
                   help="comma-separated subset of table4,table9,video,growth,batch,app (default: all but batch, "
                   "which runs `diffmesh batch` on eight clips with 1 and 2 workers and on a local Ray instance, and "
                   "app, which starts `diffmesh app` and times a job against `diffmesh run`)")
    p.add_argument("--quick", action="store_true", help="a small version of every setting (under a minute)")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--repeats", type=int, default=None, help="timed rounds of every setting (default per setting: "
                   "table4 10, table9 5, video 3, growth 1; --quick: 3, 1, 1, 1)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file (rewritten atomically)")
    p.add_argument("--video", default=None, help="video for the video and growth settings (default: the demo video)")
    p.add_argument("--smpl-path", default=None, help="SMPL folder for table9's body model (default: SMPL-sized "
                   "random buffers, which time the same)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--preset", default=None, help="table4 model size(s), comma-separated from tiny,small,paper "
                   "(default: tiny,paper; --quick: tiny)")
    p.set_defaults(func=_bench)


def _add_app(sub) -> None:
    p = sub.add_parser("app", help="the whole job in a local web page: upload a video, watch the result in 3D, "
                       "download the files (docs/app.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer "
                   "only; 0.0.0.0 lets others on the network use it)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    p.add_argument("--max-upload-mb", type=int, default=500, help="largest upload accepted, in MB (default 500)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where the jobs run the model")
    p.set_defaults(func=_app)


def build_app_parser() -> argparse.ArgumentParser:
    """The parser of `diffmesh app` alone: the full parser takes its choices from modules that import torch (3 s),
    and the app's page must be served within 3 s of the command starting."""
    parser = argparse.ArgumentParser(prog="diffmesh", description="DiffMesh: smooth human meshes from video.")
    _add_app(parser.add_subparsers(dest="command", required=True))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffmesh", description="DiffMesh: smooth human meshes from video.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_video_commands(sub)
    _add_cmu_commands(sub)
    _add_paper_commands(sub)
    _add_eval_video(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user-facing problem (DiffMeshError) is one line and exit status 2; anything else is a
    bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else argv
    args = (build_app_parser() if argv[:1] == ["app"] else build_parser()).parse_args(argv)
    previous = raise_terminated_on_sigterm()
    try:
        args.func(args)
    except DiffMeshError as e:
        print(f"diffmesh: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffmesh: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("diffmesh: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0



if __name__ == "__main__":
    sys.exit(main())
