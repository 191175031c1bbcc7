"""Batch inference on raw clips (Ray Data): equivalence with training-time evaluation, clips
made outside the project (corrupt, empty, one-frame), listing and CSV rules."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from spotting_videos import make_set
from tests_paths import REPO, TINY, run_job

from mer import config, layout, storage
from mer.errors import InputError
from mer.keyframes.settings import keyframe_settings
from mer.keyframes.table import fold_specs, load_table, outer_runs
from mer.serving.clip_keyframes import UNSET, clip_record
from mer.serving.export import train_weights
from mer.serving.inference import (
    find_clips,
    model_keyframe_settings,
    plan_keyframe_pool,
    predict_clips,
    read_clip_list,
    read_output,
)
from mer.serving.model_folder import load_model
from mer.serving.packaging import package
from mer.serving.spot_recognise import spot_then_recognise
from mer.spotting.run import run_spotting
from mer.testing.drawn_clips import drawn_face, write_video

# Inference and training-time evaluation run the same float32 operations on byte-identical
# key frames; only the batch composition (and so, possibly, the kernels' blocking) may
# differ. Largest difference allowed of any class probability:
TOLERANCE = 1e-5
SMALL = [
    *TINY,
    "model.input=delta",
    "pretrain.enabled=false",
    "finetune.epochs=15",
    "finetune.batch_size=4",
    "finetune.lr=0.01",
    "finetune.augment=false",
    "resources.cpus_per_worker=1",
]


@pytest.fixture(scope="module")
def fold_model(ray_local, tmp_path_factory):
    """One real fold run on synthetic videos (3 subjects x 3 clips): its weights and its
    saved held-out predictions, packaged as a model folder."""
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset

    root = tmp_path_factory.mktemp("fold-model")
    data = root / "data"
    generate(
        str(data),
        subjects=3,
        clips_per_subject=3,
        seed=0,
        layout="video",
        size=(96, 80),
        frames=(30, 40),
    )
    cfg = config.load(None, [f"root={root}", f"data.root={data}", *SMALL])
    build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
    kf = layout.keyframes_uri(cfg)
    table = load_table(kf)
    run = outer_runs(fold_specs(table))[0]
    folder = str(root / "models" / "fold")
    held_out = os.path.join(folder, "held_out.parquet")
    train_weights(
        cfg,
        kf,
        run,
        os.path.join(folder, "model.pt"),
        predictions=held_out,
        progress=lambda s: None,
    )
    package(folder, cfg, kf, run, name="fold", training={"run": run.id})
    return {
        "cfg": cfg,
        "data": str(data),
        "table": table,
        "run": run,
        "folder": folder,
        "held_out": pd.read_parquet(held_out),
    }


def test_inference_reproduces_the_probabilities_the_fold_run_saved(fold_model, tmp_path):
    """Raw held-out clips in, probabilities out: the same numbers training-time evaluation
    saved for that fold, from the same weights."""
    fm, data = fold_model, fold_model["data"]
    held = fm["held_out"]
    assert len(held) == 3 and set(held["subject"]) == {"sub01"}
    table = fm["table"]
    clips = table.clips.iloc[table.indices_of(fm["run"].test_subjects)]
    rows = pd.DataFrame(
        {
            "path": [os.path.relpath(s, data) for s in clips["source"]],
            "onset": clips["onset"].to_numpy(),
            "apex": clips["apex"].to_numpy(),
            "offset": clips["offset"].to_numpy(),
        }
    )
    # Two rows that cannot be used ride along: they are rejected, the rest goes through.
    extra = pd.DataFrame(
        {
            "path": ["videos/nobody/missing.mp4", rows["path"][0]],
            "onset": [0, 5],
            "apex": ["", 40],
            "offset": [9, 20],
        }
    )
    csv = tmp_path / "clips.csv"
    pd.concat([rows, extra]).to_csv(csv, index=False)

    summary = predict_clips(fm["folder"], data, str(tmp_path / "out"), str(csv), batch_size=2)
    preds, rejects = read_output(str(tmp_path / "out"))
    assert summary["predicted"] == 3 and summary["rejected"] == 2
    assert sorted(rejects["reason"].str.contains("no such video").tolist()) == [False, True]
    assert rejects["reason"].str.contains("apex 40 lies outside").sum() == 1

    # The key frames are those training used, byte for byte.
    kf = keyframe_settings(fm["cfg"].keyframes)
    first = clips.iloc[0]
    rec = clip_record(
        {
            "path": "x",
            "source": first["source"],
            "onset": first["onset"],
            "apex": first["apex"],
            "offset": first["offset"],
        },
        kf,
    )
    assert np.array_equal(rec["frames"], table.frames[table.indices_of(["synthetic/sub01"])[0]])

    saved = held.assign(
        path=[f"videos/{s}/{c}.mp4" for s, c in zip(held["subject"], held["clip"], strict=True)]
    )
    merged = saved.merge(preds, on="path", validate="one_to_one")
    want = np.stack(merged["probs"].to_numpy())
    got = merged[["prob_negative", "prob_positive", "prob_surprise"]].to_numpy()
    diff = np.abs(got - want).max()
    print(f"\nlargest |inference - training-time evaluation| probability difference: {diff:.2e}")
    assert diff <= TOLERANCE
    assert (merged["pred_x"] == merged["pred_y"]).all()
    assert (merged["apex_source"] == "annotated").all()
    # The comparison is not vacuous: the model tells these clips apart by far more.
    assert np.ptp(want, axis=0).max() > 100 * TOLERANCE


def _moving_square(n, seed, size=(96, 80)):
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (size[0], size[1], 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = cv2.GaussianBlur(base, (9, 9), 3)
        x = 20 + int(10 * np.sin(i / n * np.pi))
        cv2.rectangle(f, (x, 30), (x + 20, 50), (255, 255, 255), -1)
        out.append(f)
    return out


def test_predict_job_on_clips_made_elsewhere(fold_model, ray_local, tmp_path):
    """jobs/predict.py over videos and a frame folder written with OpenCV here, a corrupt
    file, an empty one, one-frame clips: every clip is a row or a reject with its reason,
    and each row's probabilities are the model's own forward pass on that clip."""
    clips = tmp_path / "clips"
    (clips / "cam1").mkdir(parents=True)
    write_video(clips / "cam1" / "a.mp4", _moving_square(24, 0))
    write_video(clips / "b.avi", _moving_square(18, 1))
    (clips / "frames_c").mkdir()
    for i, f in enumerate(_moving_square(15, 2)):
        cv2.imwrite(str(clips / "frames_c" / f"img{i + 1}.png"), f)
    (clips / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (clips / "empty.mp4").write_bytes(b"")
    write_video(clips / "one_frame.mp4", _moving_square(1, 3))
    (clips / "single").mkdir()
    cv2.imwrite(str(clips / "single" / "img1.jpg"), _moving_square(1, 4)[0])
    (clips / "notes.txt").write_text("not a clip")
    (clips / ".hidden.mp4").write_bytes(b"")

    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    args = ["jobs/predict.py", "--model", fold_model["folder"], "--input", str(clips)]
    args += ["--out", str(out), "--batch-size", "2", "--address", address]
    job = run_job(args, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert re.search(r"3 predicted \(\d+ flagged\), 4 rejected", job.stdout)
    preds, rejects = read_output(str(out))
    assert sorted(preds["path"]) == ["b.avi", "cam1/a.mp4", "frames_c"]
    why = dict(zip(rejects["path"], rejects["stage"] + ": " + rejects["reason"], strict=True))
    assert sorted(why) == ["broken.mp4", "empty.mp4", "one_frame.mp4", "single"]
    assert why["broken.mp4"].startswith("decode: DecodeError")
    assert "empty (0 bytes)" in why["empty.mp4"]
    assert "too short" in why["one_frame.mp4"] and "too short" in why["single"]
    assert (preds["apex_source"] == "spotted").all()
    assert (preds["onset"] == [0, 0, 1]).all() and (preds["offset"] == [17, 23, 15]).all()

    # The model's own forward pass on each clip's key frames, in this process.
    model, card = load_model(fold_model["folder"])
    kf = model_keyframe_settings(fold_model["folder"], card)
    frames = np.stack(
        [
            clip_record(
                {"path": p, "source": s, "onset": UNSET, "apex": UNSET, "offset": UNSET}, kf
            )["frames"]
            for p, s in zip(preds["path"], preds["source"], strict=True)
        ]
    )
    from mer.train.step import predict

    want = predict(model, frames, torch.device("cpu"), input=card["config"]["model"]["input"])
    got = preds[[f"prob_{c}" for c in card["classes"]]].to_numpy()
    assert np.abs(got - want).max() <= TOLERANCE
    assert (preds["pred"] == want.argmax(1)).all()
    assert (preds["pred_class"] == [card["classes"][i] for i in want.argmax(1)]).all()
    # The portable program gives the same numbers.
    portable = torch.export.load(os.path.join(fold_model["folder"], "model.pt2")).module()
    with torch.no_grad():
        assert np.abs(portable(torch.from_numpy(frames)).numpy() - want).max() <= TOLERANCE
    # The CSV copy holds the same rows.
    assert len(pd.read_csv(out / "predictions.csv")) == 3
    assert len(pd.read_csv(out / "rejects.csv")) == 4


def test_find_clips_lists_videos_and_frame_folders(tmp_path):
    (tmp_path / "s1" / "ep1").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "s1" / "ep1" / f"img{i}.jpg").write_bytes(b"x")
    (tmp_path / "s1" / "v.MP4").write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c.mp4").write_bytes(b"x")
    found = find_clips(str(tmp_path))
    assert [c["path"] for c in found] == ["s1/ep1", "s1/v.MP4"]
    assert found[0]["source"] == str(tmp_path / "s1" / "ep1")
    assert all(c["onset"] == c["offset"] == c["apex"] == UNSET for c in found)
    # A single clip as the input.
    assert [c["path"] for c in find_clips(str(tmp_path / "s1" / "ep1"))] == ["ep1"]
    assert [c["path"] for c in find_clips(str(tmp_path / "s1" / "v.MP4"))] == ["v.MP4"]
    with pytest.raises(InputError, match="no such folder"):
        find_clips(str(tmp_path / "nowhere"))


def test_clip_list_rows_that_cannot_be_used_are_rejects(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text(
        "path,onset,offset,apex\n"
        "a.mp4,3,20,\n"
        "s3://bucket/b.mp4,,,\n"
        "c.mp4,x,20,\n"
        "d.mp4,2.5,20,\n"
        ",1,2,\n"
    )
    clips, rejects = read_clip_list(str(csv), "/data")
    assert [(c["path"], c["source"], c["onset"], c["apex"], c["offset"]) for c in clips] == [
        ("a.mp4", os.path.join("/data", "a.mp4"), 3, UNSET, 20),
        ("s3://bucket/b.mp4", "s3://bucket/b.mp4", UNSET, UNSET, UNSET),
    ]
    reasons = [r["reason"] for r in rejects]
    assert "line 4: onset 'x' is not a frame number" in reasons[0]
    assert "line 5" in reasons[1] and "line 6: the path is empty" in reasons[2]
    (tmp_path / "bad.csv").write_text("file,start,end\na,1,2\n")
    with pytest.raises(InputError, match=r"column\(s\) \['path', 'onset', 'offset'\] missing"):
        read_clip_list(str(tmp_path / "bad.csv"), "/data")


def test_keyframe_actors_fit_beside_the_predictors():
    assert plan_keyframe_pool(2, 1, 0, 1, 0.25) == (2, 0.87)
    assert plan_keyframe_pool(16, 1, 0, 2, 1.0) == (14, 1.0)
    assert plan_keyframe_pool(8, 3, 0, 1, 1.0) == (8, 1.0)  # a cluster: as asked
    with pytest.raises(Exception, match="leave no CPU"):
        plan_keyframe_pool(2, 1, 0, 2, 1.0)


def test_an_empty_input_gives_empty_tables_with_the_full_schema(fold_model, tmp_path):
    """An empty input folder gives empty tables with the full schema (no Ray work)."""
    (tmp_path / "empty").mkdir()
    s = predict_clips(fold_model["folder"], str(tmp_path / "empty"), str(tmp_path / "out"))
    preds, rejects = read_output(str(tmp_path / "out"))
    assert s["clips"] == 0 and len(preds) == 0 and len(rejects) == 0
    assert "prob_surprise" in preds.columns and "reason" in rejects.columns
    assert storage.exists(str(tmp_path / "out" / "_summary.json"))


def test_model_clips_list_and_output_on_s3(fold_model, s3_endpoint):
    """--model, --input, --clips and --out as s3:// URIs: the held-out probabilities again."""
    bucket = "s3://mer-test/inference"
    for name in ("model.pt", "model_card.json", "reference_features.npy"):
        blob = open(os.path.join(fold_model["folder"], name), "rb").read()
        storage.write_bytes(f"{bucket}/model/{name}", blob)
    table, data = fold_model["table"], fold_model["data"]
    clips = table.clips.iloc[table.indices_of(fold_model["run"].test_subjects)]
    paths = [os.path.relpath(src, data) for src in clips["source"]]
    for path in paths:
        storage.write_bytes(f"{bucket}/clips/{path}", open(os.path.join(data, path), "rb").read())
    rows = clips[["onset", "apex", "offset"]].assign(path=paths)
    storage.write_bytes(f"{bucket}/clips.csv", rows.to_csv(index=False).encode())
    s = predict_clips(f"{bucket}/model", f"{bucket}/clips", f"{bucket}/out", f"{bucket}/clips.csv")
    assert (s["predicted"], s["rejected"]) == (3, 0)
    preds, _ = read_output(f"{bucket}/out")
    assert list(preds["source"]) == [f"{bucket}/clips/{p}" for p in paths]
    held = fold_model["held_out"].set_index("clip").loc[clips["clip"]]
    got = preds[["prob_negative", "prob_positive", "prob_surprise"]].to_numpy()
    assert np.abs(got - np.stack(held["probs"].to_numpy())).max() <= TOLERANCE


def test_a_predictor_actor_imports_the_model_reader_alone():
    # A Predictor actor imports its class's module: torch and the model folder's reader, not
    # the writer's scipy, matplotlib or evaluation package (about a second of its start-up).
    code = (
        "import sys; from mer.serving.predictor import Predictor; "
        "heavy = [m for m in ('scipy', 'matplotlib', 'mer.evaluation', 'mer.serving.packaging', "
        "'mer.serving.inference') if m in sys.modules]; sys.exit(str(heavy) if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-500:]


def test_a_keyframe_actor_does_not_import_torch():
    # A KeyFrames actor imports its class's module and what build_record runs; torch
    # (about 2 CPU-seconds) is the Predictor's alone.
    code = (
        "import sys; from mer.serving.clip_keyframes import KeyFrames, clip_record; "
        "import mer.keyframes.construction, mer.keyframes.motion, mer.keyframes.video; "
        "sys.exit('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120)
    assert done.returncode == 0, "importing the KeyFrames actor's code imported torch"


def test_a_keyframe_actor_runs_blas_and_opencv_on_one_thread():
    from threadpoolctl import threadpool_info, threadpool_limits

    from mer.serving.clip_keyframes import KeyFrames

    before = cv2.getNumThreads()
    outer = threadpool_limits(2)  # as on a 2-core machine without OMP_NUM_THREADS
    actor = KeyFrames(keyframe_settings({"k": 4, "size": 16}))
    try:
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and set(blas) == {1} and cv2.getNumThreads() == 1
    finally:
        actor.threads.restore_original_limits()
        outer.restore_original_limits()
        cv2.setNumThreads(before)


def test_the_predictor_forward_keeps_no_autograd_graph(tmp_path):
    # Like training-time evaluation (mer.train.step.predict), the Predictor's forward pass
    # runs without autograd: no graph is built and kept per batch.
    from mer.serving.quality import forward
    from mer.train.models import build_classifier

    cfg = config.load(None, [f"root={tmp_path}", *SMALL])
    torch.manual_seed(0)
    model = build_classifier(cfg, 3)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    k, s = cfg.keyframes.k, cfg.keyframes.size
    frames = np.random.default_rng(0).integers(0, 255, (3, k, s, s, 3), dtype=np.uint8)
    logits, feats = forward(model, frames, torch.device("cpu"), input="delta", batch_size=2)
    assert logits.shape == (3, 3) and len(feats) == 3
    assert seen == [False, False]


def test_a_recording_too_long_to_decode_whole_is_a_reject(monkeypatch):
    import mer.keyframes.video

    info = {"frames": 20000, "fps": 30.0, "height": 480, "width": 640, "first": 0, "last": 19999}
    monkeypatch.setattr(mer.keyframes.video, "probe", lambda source, timeout=None: info)
    clip = {"path": "long.mp4", "source": "long.mp4", "onset": UNSET, "apex": UNSET}
    with pytest.raises(InputError, match="too long to decode whole .*--clips"):
        clip_record({**clip, "offset": UNSET}, keyframe_settings({"decode_timeout": 1}))


def test_a_learned_interpolator_travels_with_the_model(tmp_path):
    """Key frames rendered by the learned interpolator (keyframes.interpolation adaconv):
    the model folder carries it, and inference renders with it as training did."""
    from mer.keyframes.clip_records import build_record
    from mer.keyframes.interpolator import Interpolator, InterpolatorConfig
    from mer.serving.clip_keyframes import KeyFrames
    from mer.serving.export import final_run
    from mer.testing.fakes import write_random_keyframes
    from mer.train.checkpoints import save_state
    from mer.train.models import build_classifier

    cfg = config.load(None, [f"root={tmp_path}", *SMALL, "keyframes.interpolation=adaconv"])
    torch.manual_seed(0)
    interpolator = Interpolator(InterpolatorConfig(image_size=32, channels=3))
    with torch.no_grad():  # untrained it blends linearly; disturbed, it renders its own frames
        for p in interpolator.parameters():
            p.add_(0.5 * torch.randn_like(p))
    interpolator.save(layout.interpolator_file(cfg))
    kf_table = write_random_keyframes(str(tmp_path / "kf"), subjects=2, clips=3, k=8, s=32)
    folder = str(tmp_path / "model")
    save_state(build_classifier(cfg, 3).state_dict(), os.path.join(folder, "model.pt"))
    card = package(
        folder, cfg, kf_table, final_run(["fake/s00", "fake/s01"]), name="m", training={}
    )
    copied = open(os.path.join(folder, "interpolator.pt"), "rb").read()
    assert copied == open(layout.interpolator_file(cfg), "rb").read()
    assert card["hashes"]["interpolator"] == layout.interpolator_hash(cfg)
    assert "interpolator.pt" in open(os.path.join(folder, "MODEL_CARD.md")).read()

    write_video(tmp_path / "c.mp4", _moving_square(5, 5))  # 5 frames, 8 key frames: in-betweens
    clip = {"path": "c.mp4", "source": str(tmp_path / "c.mp4"), "onset": 0, "apex": 2, "offset": 4}
    kf = model_keyframe_settings(folder, card)
    assert kf.interpolator_uri == os.path.join(folder, "interpolator.pt")
    got = KeyFrames(kf).record(clip)
    assert got["reason"] == ""
    row = {
        **clip,
        "dataset": "",
        "subject": "",
        "clip": "c",
        "label": -1,
        "emotion": "",
        "fps": 30.0,
    }
    learned = Interpolator.load(layout.interpolator_file(cfg), image_size=32, channels=3)
    assert np.array_equal(got["frames"], build_record(row, kf, learned)["frames"])
    linear = build_record(row, dataclasses.replace(kf, interpolation="linear"))["frames"]
    assert not np.array_equal(got["frames"], linear)  # the interpolator did render frames


# ---------------------------------------------------------------- how far to trust a prediction


UNUSABLE = ["noise.mp4", "still", "big.mp4"]


def _unusable_clips(folder):
    """Pure noise (no face), a still drawn face (PNG frames), a drawn face whose mouth opens
    by 20 px (far beyond a micro-expression)."""
    rng = np.random.default_rng(0)
    write_video(
        folder / "noise.mp4", [rng.integers(0, 255, (96, 80, 3), np.uint8) for _ in range(36)]
    )
    # Lossless frames: a still face compressed to MPEG-4 "moves" with the codec's noise,
    # which the no-movement flag does not always tell from a micro-expression (see
    # benchmarks/README.md, "Prediction quality").
    (folder / "still").mkdir()
    for t in range(36):
        cv2.imwrite(str(folder / "still" / f"{t:03d}.png"), drawn_face(96, t, 36, 0.0))
    write_video(folder / "big.mp4", [drawn_face(96, t, 36, 20.0) for t in range(36)])


@pytest.fixture(scope="module")
def trust_run(fold_model, ray_local, tmp_path_factory):
    """Unusable clips (whole) and normal synthetic clips from a generator seed the model
    never saw (fold_model's settings otherwise, annotated intervals), predicted with
    --abstain."""
    from mer.datasets.synthetic.generator import generate

    root = tmp_path_factory.mktemp("trust")
    clips = root / "clips"
    generate(
        str(clips / "normal"),
        subjects=1,
        clips_per_subject=3,
        seed=1,
        layout="video",
        size=(96, 80),
        frames=(30, 40),
    )
    _unusable_clips(clips)
    # The normal clips with their annotated intervals, as the training clips had them; the
    # unusable ones whole, their apex spotted.
    notes = pd.read_csv(clips / "normal" / "annotations.csv")
    rows = [
        {"path": f"normal/videos/{r.subject}/{r.clip}.mp4", **r._asdict()}
        for r in notes[["subject", "clip", "onset", "apex", "offset"]].itertuples(index=False)
    ]
    rows += [{"path": p, "onset": "", "apex": "", "offset": ""} for p in UNUSABLE]
    listed = root / "clips.csv"
    pd.DataFrame(rows)[["path", "onset", "apex", "offset"]].to_csv(listed, index=False)
    summary = predict_clips(
        fold_model["folder"], str(clips), str(root / "out"), str(listed), abstain=True
    )
    preds, _ = read_output(str(root / "out"))
    print(preds[["path", "flags", "motion_snr", "largest_motion", "ood_score"]].to_string())
    return summary, preds.set_index("path"), root


def test_unusable_clips_are_flagged_and_normal_ones_are_not(trust_run, fold_model):
    summary, preds, _ = trust_run
    card = json.loads(open(os.path.join(fold_model["folder"], "model_card.json")).read())
    th = card["trust"]["thresholds"]
    assert th["no_face"]["active"]  # the synthetic training faces were found
    assert th["no_movement"]["threshold"] > 0 and th["beyond_micro"]["threshold"] > 0
    flags = preds["flags"].str.split(";")
    assert "no_face" in flags["noise.mp4"]
    assert "no_movement" in flags["still"]
    assert "beyond_micro" in flags["big.mp4"]
    assert preds.loc["big.mp4", "largest_motion"] > th["beyond_micro"]["threshold"]
    normal = preds[preds.index.str.startswith("normal/")]
    assert len(normal) == 3 and not normal["flagged"].any(), normal["flags"]
    assert normal["face_found"].all()
    # Counts in the summary agree with the table.
    assert summary["flagged"]["any"] == int(preds["flagged"].sum()) == 3
    assert summary["flagged"]["no_face"] == int(preds["flag_no_face"].sum())


def test_abstain_answers_unknown_for_flagged_clips_only(trust_run):
    summary, preds, _ = trust_run
    flagged = preds["flagged"]
    assert (preds.loc[flagged, "pred_class"] == "unknown").all()
    assert (preds.loc[flagged, "pred"] == -1).all()
    kept = preds[~flagged]
    probs = kept[[c for c in kept.columns if c.startswith("prob_")]].to_numpy()
    assert (kept["pred"].to_numpy() == probs.argmax(1)).all()
    assert summary["abstain"] and summary["abstained"] == int(flagged.sum())
    # Without a calibration (no search experiment), probabilities are the raw ones.
    assert summary["temperature"] is None
    raw = kept[[f"raw_{c}" for c in kept.columns if c.startswith("prob_")]].to_numpy()
    assert np.array_equal(probs, raw)


def test_spot_then_recognise_classifies_each_spotted_micro_interval(fold_model, tmp_path):
    """Long videos in: the spotting run's final threshold finds the micro-expressions, each
    becomes one row with class probabilities, and the card says which spotter did it."""
    labelled = make_set(tmp_path / "labelled", subjects=3, n=60)
    cfg = config.load(
        None,
        [
            f"root={tmp_path / 'run'}",
            f"spotting.root={tmp_path / 'labelled'}",
            "spotting.side=64",
            "spotting.spotters=[mdmd]",
        ],
    )
    run = run_spotting(cfg, labelled, use_ray=False, progress=lambda m: None)
    new = tmp_path / "new"
    make_set(new, subjects=2, n=60)  # other videos, the same kind of movements
    out = str(tmp_path / "out")
    s = spot_then_recognise(
        fold_model["folder"], str(new), out, run.out, "mdmd", 30.0, progress=lambda m: None
    )
    spotted = pd.read_csv(os.path.join(out, "spotted.csv"))
    micro = spotted[spotted["type"] == "micro"]
    preds, rejects = read_output(out)
    assert s["spotted_micro"] == len(micro) >= 1
    assert len(preds) + len(rejects) == len(micro)  # one row per micro interval
    got = preds.set_index(["path", "onset", "offset"]).sort_index()
    want = micro.set_index(["path", "onset", "offset"]).sort_index()
    assert set(got.index) <= set(want.index)
    np.testing.assert_allclose(got["spot_score"], want.loc[got.index, "score"])
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["spotting"]["spotter"] == "mdmd"
    assert card["spotting"]["threshold"] == run.thresholds["mdmd"]["final"]["threshold"]
    assert "mdmd spotter" in (tmp_path / "out" / "MODEL_CARD.md").read_text()
