"""The key-frame stage on Ray Data: rejects, schema, skip/rebuild, resumption, S3 output."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests_paths import file_bytes

from mer import config, storage
from mer.datasets import load_manifest
from mer.datasets.synthetic.generator import generate
from mer.keyframes.chunks import CHUNK_STEPS, chunk_name, process_chunk
from mer.keyframes.preprocess import (
    build_keyframes_dataset,
    chunk_items,
    chunk_settings,
    manifest_rows,
)
from mer.keyframes.settings import keyframe_settings
from mer.keyframes.table import frames_array, read_keyframes
from mer.layout import keyframes_uri

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {
    "dataset": "string",
    "subject": "string",
    "clip": "string",
    "label": "int64",
    "emotion": "string",
    "onset": "int64",
    "apex": "int64",
    "offset": "int64",
    "apex_source": "string",
    "keyframe_indices": "list<element: double>",
    "source": "string",
    "fps": "double",
}


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp") / "data"
    generate(
        str(root),
        subjects=3,
        clips_per_subject=3,
        seed=3,
        layout="video",
        size=(96, 80),
        frames=(40, 50),
    )
    return str(root)


def cfg_for(root, data_root, *extra):
    return config.load(
        None,
        [
            f"root={root}",
            f"data.root={data_root}",
            "keyframes.k=8",
            "keyframes.size=32",
            "keyframes.chunk_size=3",
            *extra,
        ],
    )


def with_corrupt_clips(manifest: pd.DataFrame, folder) -> pd.DataFrame:
    """The manifest plus four clips whose files are broken in the ways users meet."""
    folder.mkdir(parents=True, exist_ok=True)
    good = manifest.iloc[0]
    data = open(good["source"], "rb").read()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n")
    frames = folder / "badjpeg"
    frames.mkdir(exist_ok=True)
    import cv2

    from mer.keyframes.video import read_clip

    clip = read_clip(good["source"], 0, 5)
    for i, f in enumerate(clip):
        cv2.imwrite(str(frames / f"img{i + 1}.jpg"), f[..., ::-1])
    (frames / "img3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    bad = []
    for name, source, (on, off) in [
        ("truncated", str(folder / "truncated.mp4"), (0, 39)),
        ("empty", str(folder / "empty.mp4"), (0, 10)),
        ("text", str(folder / "text.mp4"), (0, 10)),
        ("badjpeg", str(frames), (1, 6)),
    ]:
        row = good.copy()
        row["subject"], row["clip"], row["source"] = "zz", name, source
        row["onset"], row["apex"], row["offset"] = on, pd.NA, off
        bad.append(row)
    return pd.concat([manifest, pd.DataFrame(bad)], ignore_index=True)


def test_corrupt_clips_are_rejected_with_reason_and_the_rest_written(
    ray_local, video_data, tmp_path
):
    # 4 broken clips of 13 is more than the default limit (0.2) allows.
    cfg = cfg_for(tmp_path, video_data, "keyframes.max_reject_fraction=0.5")
    manifest = load_manifest("synthetic", video_data)
    full = with_corrupt_clips(manifest, tmp_path / "bad")
    lines = []
    meta = build_keyframes_dataset(cfg, full, progress=lines.append)
    assert meta["counts"]["written"] == len(manifest)
    assert meta["counts"]["rejected"] == 4
    rejects = pd.read_parquet(os.path.join(keyframes_uri(cfg), "_rejects.parquet"))
    assert sorted(rejects["clip"]) == ["badjpeg", "empty", "text", "truncated"]
    for r in rejects.itertuples():
        assert r.stage == "decode" and r.reason, r
    assert rejects.set_index("clip").loc["badjpeg", "reason"].count("img3") == 1
    assert any("chunk" in line and "clips/s" in line for line in lines)  # progress shown
    _, clips, frames = read_keyframes(keyframes_uri(cfg))
    assert sorted(clips["clip"]) == sorted(manifest["clip"])
    assert frames.shape == (len(manifest), 8, 32, 32, 3) and frames.dtype == np.uint8


def test_parquet_schema_and_key_frame_positions(ray_local, video_data, tmp_path):
    cfg = cfg_for(tmp_path, video_data)
    result = build_keyframes_dataset(cfg, progress=lambda s: None)
    uri = keyframes_uri(cfg)
    meta = storage.read_json(os.path.join(uri, "_meta.json"))
    table = pq.read_table(os.path.join(uri, meta["parts"][0]))
    for name, typ in SCHEMA.items():
        assert str(table.schema.field(name).type) == typ, name
    assert frames_array(table).shape == (table.num_rows, 8, 32, 32, 3)
    # Where the time went: every chunk's steps and its actor's start, never in _meta.json.
    chunks = result["profile"]["chunks"]
    assert len(chunks) == len(meta["parts"]) and "profile" not in meta
    for c in chunks:
        assert set(c["steps"]) == set(CHUNK_STEPS) and min(c["steps"].values()) >= 0
        assert c["actor_ready"] <= c["started"]
    _, clips, _ = read_keyframes(uri)
    for r in clips.itertuples():
        pos = np.asarray(r.keyframe_indices)
        assert (np.diff(pos) >= 0).all()
        assert pos[0] == r.onset and r.apex in pos and pos[-1] <= r.offset
    gt = pd.read_csv(os.path.join(video_data, "ground_truth.csv"))
    assert set(clips["apex_source"]) <= {"annotated", "spotted"}
    assert len(clips) == len(gt)
    for key in ("settings", "manifest", "counts", "hash", "versions"):
        assert key in meta
    assert meta["settings"]["keyframes.k"] == 8 and meta["versions"]["ray"]


def test_same_config_does_no_work_and_a_new_one_builds_beside_it(ray_local, video_data, tmp_path):
    cfg = cfg_for(tmp_path, video_data)
    first = build_keyframes_dataset(cfg, progress=lambda s: None)
    uri = keyframes_uri(cfg)
    mtimes = {p: os.path.getmtime(os.path.join(uri, p)) for p in first["parts"]}
    again = build_keyframes_dataset(cfg, progress=lambda s: None)
    assert again.get("skipped") is True
    assert mtimes == {p: os.path.getmtime(os.path.join(uri, p)) for p in first["parts"]}
    # An execution-only setting is the same table.
    faster = cfg_for(tmp_path, video_data, "keyframes.concurrency=1")
    assert keyframes_uri(faster) == uri
    changed = cfg_for(tmp_path, video_data, "keyframes.method=uniform")
    rebuilt = build_keyframes_dataset(changed, progress=lambda s: None)
    assert rebuilt["hash"] != first["hash"] and not rebuilt.get("skipped")
    assert keyframes_uri(changed) != uri
    _, old, _ = read_keyframes(uri)  # the first table is still there, untouched
    _, new, _ = read_keyframes(keyframes_uri(changed))
    assert sorted(old["clip"]) == sorted(new["clip"])
    assert mtimes == {p: os.path.getmtime(os.path.join(uri, p)) for p in first["parts"]}
    assert [list(v) for v in old["keyframe_indices"]] != [list(v) for v in new["keyframe_indices"]]


def test_changed_clips_under_the_same_settings_are_refused(ray_local, video_data, tmp_path):
    from mer.errors import InputError

    cfg = cfg_for(tmp_path, video_data)
    manifest = load_manifest("synthetic", video_data)
    build_keyframes_dataset(cfg, manifest, progress=lambda s: None)
    relabelled = manifest.copy()
    relabelled.loc[0, "label"] = (int(relabelled.loc[0, "label"]) + 1) % 3
    with pytest.raises(InputError, match="changed since"):
        build_keyframes_dataset(cfg, relabelled, progress=lambda s: None)


def test_too_many_rejects_stop_the_run_with_their_reasons(ray_local, video_data, tmp_path):
    from mer.errors import InputError

    cfg = cfg_for(tmp_path, video_data, "keyframes.max_reject_fraction=0.1")
    manifest = load_manifest("synthetic", video_data)
    full = with_corrupt_clips(manifest, tmp_path / "bad")  # 4 broken of 13
    with pytest.raises(InputError, match=r"4 of 13 clips were rejected.*DecodeError"):
        build_keyframes_dataset(cfg, full, progress=lambda s: None)
    with pytest.raises(InputError, match="_meta.json"):
        read_keyframes(keyframes_uri(cfg))  # no table reads as complete


def test_a_bug_in_our_code_fails_the_stage_instead_of_rejecting(video_data, tmp_path, monkeypatch):
    import mer.keyframes.chunks as chunks

    cfg = cfg_for(tmp_path, video_data)
    rows = manifest_rows(load_manifest("synthetic", video_data))

    def broken(row, kf, interpolator=None):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(chunks, "build_record", broken)
    with pytest.raises(KeyError, match="a bug"):
        process_chunk(chunk_items(cfg, rows)[0], chunk_settings(cfg))


def test_a_key_frame_actor_does_not_import_torch():
    # An actor imports the module of its class (mer.keyframes.chunks) and what a chunk
    # runs; torch (about 2 CPU-seconds to import) was the largest part of its start-up.
    code = (
        "import sys, cv2, numpy as np; from mer.keyframes.chunks import _ChunkWorker; "
        "from mer.keyframes.clip_records import build_record; "
        "import mer.keyframes.construction, mer.keyframes.motion, mer.keyframes.clip_quality; "
        "sys.exit('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120)
    assert done.returncode == 0, "importing the key-frame actor's code imported torch"


def test_a_key_frame_actor_runs_blas_on_one_thread():
    from threadpoolctl import threadpool_info, threadpool_limits

    from mer.keyframes.chunks import _ChunkWorker

    outer = threadpool_limits(2)  # as on a 2-core machine without OMP_NUM_THREADS
    worker = _ChunkWorker(keyframe_settings(config.KeyframeConfig()))
    try:
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and set(blas) == {1}
    finally:
        worker.threads.restore_original_limits()
        outer.restore_original_limits()


def test_key_frame_actors_queue_a_second_chunk_only_when_every_actor_has_several():
    from mer.actor_pools import fixed_pool, items_in_flight

    # configs/tiny.yaml on two decode nodes: two chunks, one each, whichever actor is up first.
    assert items_in_flight(actors=2, items=2) == 1
    assert items_in_flight(actors=2, items=7) == 1
    # The 256-clip benchmark (32 chunks of 8): the next chunk waits on its actor.
    assert items_in_flight(actors=2, items=32) == 2
    assert items_in_flight(actors=32, items=55) == 1  # megc2019's 442 clips on 32 actors
    pool = fixed_pool(2, 32)
    assert (pool.min_size, pool.max_size, pool.max_tasks_in_flight_per_actor) == (2, 2, 2)


def test_killed_run_resumes_and_writes_every_clip_once(ray_local, video_data, tmp_path):
    cfg = cfg_for(tmp_path, video_data)
    manifest = load_manifest("synthetic", video_data)
    out = keyframes_uri(cfg)
    # A killed run: chunk 0 finished (part + marker); chunk 1 wrote its part, then died
    # before its marker; nothing else, and no _meta.json.
    items = chunk_items(cfg, manifest_rows(manifest))
    assert len(items) == 3
    kf = chunk_settings(cfg)
    process_chunk(items[0], kf)
    process_chunk(items[1], kf)
    os.remove(os.path.join(out, "_chunks", chunk_name(items[1])))
    with pytest.raises(Exception, match="_meta.json"):
        read_keyframes(out)  # nothing reads the half-built table as complete
    lines = []
    meta = build_keyframes_dataset(cfg, progress=lines.append)
    assert any("resuming: 1/3 chunks done" in line for line in lines)
    _, clips, _ = read_keyframes(out)
    assert sorted(clips["clip"]) == sorted(manifest["clip"])  # each clip exactly once
    assert meta["counts"]["written"] == len(manifest)


def test_output_on_s3(ray_local, s3_endpoint, video_data):
    cfg = cfg_for("s3://mer-test/kf-run", video_data)
    meta = build_keyframes_dataset(cfg, progress=lambda s: None)
    uri = keyframes_uri(cfg)
    assert uri.startswith("s3://")
    _, clips, frames = read_keyframes(uri)
    assert len(clips) == meta["counts"]["written"] > 0
    assert storage.exists(f"{uri}/_rejects.parquet")
    again = build_keyframes_dataset(cfg, progress=lambda s: None)
    assert again.get("skipped") is True


def test_face_crop_decodes_small_and_matches_a_full_size_build(tmp_path):
    """With face_crop on, the crop is halved by means as often as it stays at least
    MIN_SIDE px (here once) and gives the key frames a full-size build would."""
    from mer.keyframes.align import reduce_gray
    from mer.keyframes.clip_records import build_record
    from mer.keyframes.construction import build_keyframes, motion_curve
    from mer.keyframes.faces import crop, face_crop_box
    from mer.keyframes.video import read_clip

    data = tmp_path / "data"
    generate(str(data), subjects=1, clips_per_subject=2, seed=5, size=(680, 560), frames=(24, 30))
    cfg = cfg_for(tmp_path, data, "keyframes.face_crop=true", "keyframes.size=64")
    kf = keyframe_settings(cfg.keyframes)
    for row in manifest_rows(load_manifest("synthetic", str(data))):
        record = build_record(row, kf)
        full = read_clip(row["source"], row["onset"], row["offset"])
        box, found = face_crop_box(full[0])
        assert found and record["face_found"] and box[2] >= 4 * 128  # room for one halving
        face = crop(full, box)
        expected = build_keyframes(
            face,
            0,
            row["apex"] - row["onset"],
            len(face) - 1,
            k=8,
            size=64,
            motion=motion_curve(reduce_gray(face)[0], 0),
            register=True,
        )
        # The motion curve sees a slightly different picture: a position may move a frame.
        positions = np.asarray(record["keyframe_indices"]) - row["onset"]
        assert np.abs(positions - expected.indices).max() <= 1
        same = positions == expected.indices
        assert same.mean() >= 0.75
        # (The record is registered with the motion curve's drift, `expected` by phase
        # correlation: the two agree to well under a grey level on average.)
        difference = np.abs(record["frames"][same].astype(int) - expected.frames[same])
        assert difference.mean() < 2.0, difference.mean()
        phase = build_record(row, dataclasses.replace(kf, registration="phase"))
        assert np.array_equal(phase["keyframe_indices"], record["keyframe_indices"])
        assert 0 < np.abs(phase["frames"].astype(int) - record["frames"]).mean() < 1.0


def test_synthetic_data_rendered_as_ray_tasks_matches_one_process(ray_local, tmp_path):
    """The pipeline's data stage renders subjects as Ray tasks (mer.datasets.stage.ray_map): the
    same files as rendering them here, one after another."""
    from mer.datasets.stage import ray_map as _ray_map

    tiny = dict(subjects=2, clips_per_subject=2, size=(48, 40), frames=(12, 16), seed=3)
    mapper = _ray_map(str(tmp_path / "a"))
    assert mapper is not None  # 2 CPUs on this node
    a = file_bytes(generate(str(tmp_path / "a"), mapper=mapper, **tiny)["root"])
    b = file_bytes(generate(str(tmp_path / "b"), **tiny)["root"])
    assert len(a) > 20 and a == b


def test_tables_written_with_a_tensor_frames_column_read_the_same(tmp_path):
    # Tables written before the frames column became one binary value per clip.
    import pyarrow as pa

    from mer.testing.fakes import write_random_keyframes

    uri = write_random_keyframes(str(tmp_path / "kf"), subjects=2, clips=3, part_size=4)
    _, clips, frames = read_keyframes(uri)
    for part in storage.read_json(os.path.join(uri, "_meta.json"))["parts"]:
        path = os.path.join(uri, part)
        t = pq.read_table(path)
        i = t.schema.get_field_index("frames")
        tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(frames_array(t).copy())
        pq.write_table(t.set_column(i, "frames", tensor), path)
    _, old_clips, old_frames = read_keyframes(uri)
    assert str(pq.read_table(path).schema.field("frames").type).startswith("extension")
    np.testing.assert_array_equal(old_frames, frames)
    pd.testing.assert_frame_equal(old_clips, clips)
