"""Prediction quality flags and the OOD score: how many unusable clips they catch, and how
many normal clips they wrongly flag.

    .venv/bin/python benchmarks/prediction_quality.py            # demo size (~10 min, 2 cores)
    .venv/bin/python benchmarks/prediction_quality.py --smoke    # a minute: the plumbing only

The model: configs/demo.yaml's (synthetic "simple" preset, 8 subjects x 6 clips, generator
seed 0, 340x280 videos; K=8, S=32, C3D width 0.125, delta input, no prior learning to keep
it short), trained on every subject (mer.serving.export.train_weights on the final run) and
packaged (mer.serving.packaging.package: thresholds and reference embeddings from those training
clips; no calibration, which needs a search). Clips predicted (mer.serving.inference.predict_clips,
whole clips, apex spotted, as `jobs/predict.py --input DIR`):
  normal     the same generator and settings at seed HELD_OUT_SEED, never used in training,
             with their annotated intervals (onset, apex, offset: as the training clips had)
  normal_whole  the same files whole, their apex spotted (what a user without annotations
             gets)
  noise      uniform random pixels (no face), 50 frames
  still      a drawn face that does not move
  big        a drawn face whose mouth opens by 25 px (far beyond a micro-expression)
  non-face   a textured pattern with a square sliding across it
The unusable clips are predicted whole. Reported per group: the share flagged (any flag, what --abstain turns into "unknown") and
the share raising each flag. The thresholds are the training clips' (mer.serving.quality); nothing
here was tuned on these clips. Figures in prediction_quality.json (--smoke:
prediction_quality_smoke.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mer.testing.drawn_clips import drawn_face, write_video  # noqa: E402
from mer.testing.model_sizes import DEMO_MODEL  # noqa: E402

HELD_OUT_SEED = 101  # a synthetic generator seed no model or threshold here was made with
FULL = {"subjects": 8, "clips": 6, "held_out_subjects": 4, "unusable": 8, "size": (340, 280)}
SMOKE = {"subjects": 3, "clips": 3, "held_out_subjects": 1, "unusable": 2, "size": (96, 80)}
MODEL = [
    *DEMO_MODEL,
    "pretrain.enabled=false",
    "finetune.epochs=20",
    "finetune.batch_size=16",
    "finetune.lr=0.0005",
    "finetune.augment=false",
    "resources.cpus_per_worker=1",
]


def _face(side: int, t: int, n: int, mouth: float, tint: int) -> np.ndarray:
    return drawn_face(side, t, n, mouth, background=190 + tint, skin=(150 + tint, 170, 210 - tint))


def unusable_clips(folder: Path, n: int) -> None:
    """n clips of each unusable kind, varied by seed (size, length, colour)."""
    for kind in ("noise", "still", "big", "nonface"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        side, length, tint = int(rng.integers(120, 240)), int(rng.integers(40, 80)), i % 20
        noise = [rng.integers(0, 255, (side, side, 3), np.uint8) for _ in range(50)]
        write_video(folder / "noise" / f"{i}.mp4", noise)
        write_video(
            folder / "still" / f"{i}.mp4", [_face(side, t, length, 0, tint) for t in range(length)]
        )
        write_video(
            folder / "big" / f"{i}.mp4", [_face(side, t, length, 25, tint) for t in range(length)]
        )
        base = cv2.GaussianBlur(rng.integers(40, 220, (side, side, 3), np.uint8), (9, 9), 3)
        moving = []
        for t in range(length):
            f = base.copy()
            x = int(side * (0.2 + 0.4 * np.sin(np.pi * t / length)))
            cv2.rectangle(f, (x, side // 3), (x + side // 5, side // 3 + side // 5), (255,) * 3, -1)
            moving.append(f)
        write_video(folder / "nonface" / f"{i}.mp4", moving)


def train_model(work: Path, size: dict, progress) -> str:
    from mer import config, layout
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.keyframes.table import load_table
    from mer.serving.export import final_run, train_weights
    from mer.serving.packaging import package

    data = work / "train-data"
    generate(
        str(data),
        preset="simple",
        subjects=size["subjects"],
        clips_per_subject=size["clips"],
        seed=0,
        layout="video",
        size=size["size"],
    )
    cfg = config.load(None, [f"root={work}", f"data.root={data}", *MODEL])
    build_keyframes_dataset(cfg, use_ray=False, progress=progress)
    kf = layout.keyframes_uri(cfg)
    table = load_table(kf)
    run = final_run(sorted(set(table.subject_keys)))
    folder = str(work / "model")
    train_weights(cfg, kf, run, f"{folder}/model.pt", progress=progress)
    package(folder, cfg, kf, run, name="quality-bench", training={"run": "all"}, progress=progress)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny run: the plumbing only")
    ap.add_argument("--work", default="/tmp/mer-quality-bench", help="scratch folder (replaced)")
    ap.add_argument(
        "--out", help="the JSON written (default: benchmarks/prediction_quality[_smoke].json)"
    )
    args = ap.parse_args()
    size = SMOKE if args.smoke else FULL
    import ray

    from mer.datasets.synthetic.generator import generate
    from mer.serving.inference import find_clips, predict_clips, read_output

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # address="local": a new Ray of our own, never another one running on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    say = lambda s: print(s, flush=True)  # noqa: E731
    try:
        folder = train_model(work, size, lambda s: None)
        say(f"model trained and packaged ({time.time() - t0:.0f} s)")
        clips = work / "clips"
        generate(
            str(clips / "normal"),
            preset="simple",
            subjects=size["held_out_subjects"],
            clips_per_subject=size["clips"],
            seed=HELD_OUT_SEED,
            layout="video",
            size=size["size"],
        )
        shutil.copytree(clips / "normal", clips / "normal_whole")
        unusable_clips(clips, size["unusable"])
        notes = pd.read_csv(clips / "normal" / "annotations.csv")
        rows = [
            {"path": f"normal/videos/{r.subject}/{r.clip}.mp4", **r._asdict()}
            for r in notes[["subject", "clip", "onset", "apex", "offset"]].itertuples(index=False)
        ]
        rows += [
            {"path": c["path"], "onset": "", "apex": "", "offset": ""}
            for c in find_clips(str(clips))
            if not c["path"].startswith("normal/")
        ]
        listed = work / "clips.csv"
        pd.DataFrame(rows)[["path", "onset", "apex", "offset"]].to_csv(listed, index=False)
        summary = predict_clips(
            folder, str(clips), str(work / "out"), str(listed), abstain=True, progress=say
        )
        preds, rejects = read_output(str(work / "out"))
    finally:
        ray.shutdown()
    preds["group"] = preds["path"].str.split("/").str[0]
    flag_cols = [c for c in preds.columns if c.startswith("flag_")]
    groups = {}
    for g, rows in preds.groupby("group"):
        groups[g] = {
            "clips": int(len(rows)),
            "flagged": float(rows["flagged"].mean()),
            **{c.removeprefix("flag_"): float(rows[c].mean()) for c in flag_cols},
        }
    card = json.loads((Path(folder) / "model_card.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "size": "smoke" if args.smoke else "demo",
        "settings": {**size, "held_out_seed": HELD_OUT_SEED, "model": MODEL},
        "groups": groups,
        "rejected": int(len(rejects)),
        "thresholds": card["trust"]["thresholds"],
        "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
        "summary_flagged": summary["flagged"],
    }
    name = "prediction_quality_smoke.json" if args.smoke else "prediction_quality.json"
    path = Path(args.out) if args.out else HERE / name
    path.write_text(json.dumps(out, indent=1) + "\n")
    shown = ["clips", "flagged", *[c.removeprefix("flag_") for c in flag_cols]]
    say("| group | " + " | ".join(shown) + " |")
    say("|---" * (len(shown) + 1) + "|")
    for g, row in groups.items():
        cells = [str(row["clips"])] + [f"{row[c]:.2f}" for c in shown[1:]]
        say(f"| {g} | " + " | ".join(cells) + " |")
    say(f"rejected {len(rejects)}; {out['seconds']} s -> {path}")


if __name__ == "__main__":
    main()
