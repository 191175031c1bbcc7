"""Predict the class of new clips with an exported model: a Ray Data pipeline of key-frame
construction and the model in an actor pool.

    python jobs/predict.py --model runs/demo/models/demo --input NEW_CLIPS/ --out PREDICTIONS/
    python jobs/predict.py --model s3://B/mer/models/megc --input s3://B/clips/ \
        --clips s3://B/clips/intervals.csv --out s3://B/predictions/ --gpus-per-predictor 0.5

--input: a folder or s3:// prefix; every video file and every folder of numbered frame
images under it is a clip, the whole clip its interval and its apex spotted. --clips: a
CSV with columns path (relative to --input), onset, offset and optionally apex (frame
numbers in the source's own numbering, videos from 0) instead. Key frames are built with
the settings the model card records. Output under --out: predictions.parquet/.csv (one
row per clip: path, interval, apex and its source, prob_<class>, pred, pred_class),
rejects.parquet/.csv (unreadable or too-short clips, with the reason) and _summary.json.
Each prediction also carries quality flags and an out-of-distribution score, judged against
the model's training clips (docs/prediction-quality.md); prob_<class> are calibrated where
the model card has a temperature. --abstain: a flagged clip's pred_class is "unknown".

Spot-then-recognise (--spot): every frame folder under --input is a long video (--fps);
the spotting run's spotter (--spotter, with the final threshold jobs/spot.py chose on its
labelled set) finds the micro-expression intervals, and each becomes a clip: one row per
interval with prob_<class> and spot_score. spotted.csv lists every spotted interval, and
model_card.json / MODEL_CARD.md in --out say which spotter and thresholds were used
(docs/spotting.md).

    python jobs/predict.py --model runs/demo/models/demo --input LONG_VIDEOS/ --fps 200 \
        --spot runs/demo/spotting/samm_lv/<hash> --spotter mdmd --out SPOTTED/
"""

import argparse

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder (jobs/export.py), local or s3://")
    p.add_argument("--input", required=True, help="folder or s3:// prefix of clips")
    p.add_argument("--clips", help="CSV: path, onset, offset[, apex] (default: whole clips)")
    p.add_argument("--out", required=True, help="output folder, local or s3://")
    p.add_argument("--batch-size", type=int, default=32, help="clips per model batch")
    p.add_argument("--predictors", type=int, default=1, help="model actors")
    p.add_argument("--cpus-per-predictor", type=float, default=0.25)
    p.add_argument("--gpus-per-predictor", type=float, default=0.0, help="fractions share one")
    p.add_argument(
        "--keyframe-workers", type=int, default=0, help="key-frame actors (0: one per free CPU)"
    )
    p.add_argument(
        "--abstain",
        action="store_true",
        help="answer 'unknown' (pred -1) for a clip with any quality or OOD flag",
    )
    p.add_argument("--spot", help="spotting run folder (jobs/spot.py): spot, then recognise")
    p.add_argument(
        "--spotter", default="motion", help="with --spot: motion, mdmd or learned (default motion)"
    )
    p.add_argument("--fps", type=float, help="with --spot: the long videos' frame rate")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=float, help="logical CPUs of a local Ray (default: cores)")
    p.add_argument("--verbose", action="store_true", help="Ray's logs on the console")
    args = p.parse_args()

    import os

    from mer.config import PipelineConfig
    from mer.storage import check_reachable, is_remote

    if args.spot and (args.clips or not args.fps):
        p.error("--spot needs --fps and takes no --clips (the spotter finds the intervals)")
    for name in ("model", "input", "clips", "out", "spot"):
        value = getattr(args, name)
        if value and not is_remote(value):
            setattr(args, name, os.path.abspath(value))  # Ray workers run elsewhere
        if value:
            check_reachable(getattr(args, name), f"--{name}")
    # Ray's own logs go to <out>/logs/ (a temporary folder for an s3:// --out).
    cli.connect_ray(args, PipelineConfig(root=args.out))
    from mer.serving.inference import predict_clips, read_output
    from mer.serving.spot_recognise import spot_then_recognise

    options = dict(
        batch_size=args.batch_size,
        predictors=args.predictors,
        cpus_per_predictor=args.cpus_per_predictor,
        gpus_per_predictor=args.gpus_per_predictor,
        keyframe_workers=args.keyframe_workers,
        abstain=args.abstain,
    )
    if args.spot:
        summary = spot_then_recognise(
            args.model, args.input, args.out, args.spot, args.spotter, args.fps, **options
        )
        print(
            f"{summary['spotted_micro']} micro-expressions spotted ({args.spotter}, "
            f"threshold {summary['spotting']['threshold']:g}) in {summary['long_videos']} videos"
        )
    else:
        summary = predict_clips(args.model, args.input, args.out, args.clips, **options)
    preds, rejects = read_output(args.out)
    shown = ["path", "onset", "apex", "offset", "apex_source", "pred_class"]
    shown += ["spot_score"] if args.spot else []
    shown += [c for c in preds.columns if c.startswith("prob_")] + ["flags"]
    if len(preds):
        print(preds[shown].head(20).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(rejects):
        print(f"rejected ({len(rejects)}):")
        print(rejects[["path", "stage", "reason"]].head(20).to_string(index=False))
    flagged = summary["flagged"]["any"]
    unknown = f", {summary['abstained']} answered unknown" if args.abstain else ""
    print(
        f"{summary['predicted']} predicted ({flagged} flagged{unknown}), "
        f"{summary['rejected']} rejected -> {args.out}"
    )


if __name__ == "__main__":
    cli.main(main)
