"""Inspection of a dataset and a key-frame table: summary counts, rejects by reason, contact
sheets, and jobs/inspection.py in a subprocess (no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests_paths import REPO

from mer import config
from mer.datasets import load_manifest
from mer.datasets.synthetic.generator import generate
from mer.keyframes.construction import adaptive_positions
from mer.keyframes.inspection import (
    choose_clips,
    clip_motion,
    contact_sheet,
    format_summary,
    inspect_dataset,
    inspect_keyframes,
    reason_kind,
    summarise_dataset,
)
from mer.keyframes.preprocess import build_keyframes_dataset
from mer.keyframes.settings import keyframe_settings
from mer.keyframes.table import read_keyframes, read_rejects
from mer.layout import keyframes_uri

SETTINGS = ["keyframes.k=8", "keyframes.size=32"]


def cfg_for(root, data, *extra):
    return config.load(None, [f"root={root}", f"data.root={data}", *SETTINGS, *extra])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "data"
    generate(str(out), subjects=2, clips_per_subject=3, seed=0, size=(96, 80), frames=(40, 50))
    return str(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A run root holding the key-frame table of `data`: (cfg, table URI)."""
    cfg = cfg_for(tmp_path_factory.mktemp("run"), data)
    build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
    return cfg, keyframes_uri(cfg)


def with_bad_clips(manifest: pd.DataFrame, folder) -> pd.DataFrame:
    """The manifest plus three clips the key-frame stage rejects and two the adapter did."""
    good = manifest.iloc[0]
    broken = folder / "badjpeg"
    broken.mkdir(parents=True)
    first = int(good["onset"])
    for i, name in enumerate(sorted(os.listdir(good["source"]))):
        data = open(os.path.join(good["source"], name), "rb").read()
        (broken / name).write_bytes(data if i % 2 else b"\xff\xd8 not really a jpeg")
    rows = []
    for clip, source, (on, off) in [
        ("badjpeg", str(broken), (first, int(good["offset"]))),
        ("missing", str(folder / "nowhere"), (1, 10)),
        ("outside", good["source"], (first, first + 10_000)),
    ]:
        row = good.copy()
        row["subject"], row["clip"], row["source"] = "zz", clip, source
        row["onset"], row["apex"], row["offset"] = on, pd.NA, off
        rows.append(row)
    full = pd.concat([manifest, pd.DataFrame(rows)], ignore_index=True)
    full.attrs["rejects"] = [
        {"dataset": "synthetic", "subject": "yy", "clip": c, "stage": "manifest", "reason": r}
        for c, r in [
            ("e1", "emotion 'others' is outside the 3class protocol"),
            ("e2", "emotion 'fear' is outside the 3class protocol"),
        ]
    ]
    return full


def test_summary_counts_are_the_manifests(run, data):
    cfg, uri = run
    manifest = load_manifest("synthetic", data)
    _, clips, _ = read_keyframes(uri, frames=False)
    summary = summarise_dataset(clips, read_rejects(uri), classes=("neg", "pos", "sur"))

    names = np.array(["neg", "pos", "sur"])[manifest["label"].astype(int)]
    expected = pd.crosstab(manifest["dataset"] + "/" + manifest["subject"], names)
    got = pd.DataFrame(summary["by_subject"]).T.reindex(columns=expected.columns)
    pd.testing.assert_frame_equal(
        got.sort_index(), expected.sort_index(), check_names=False, check_dtype=False
    )
    assert summary["classes"] == {c: int((names == c).sum()) for c in ["neg", "pos", "sur"]}
    assert summary["clips"] == len(manifest) and summary["subjects"] == 2
    assert sum(summary["apex_sources"].values()) == len(manifest)
    lengths = manifest["offset"] - manifest["onset"] + 1
    assert summary["frames"]["max"] == lengths.max()
    assert summary["keyframes"]["k"] == [8]
    assert summary["rejects"] == {"total": 0, "by_reason": []}
    text = format_summary(summary)
    assert "synthetic/sub01" in text and "rejects: 0" in text


def test_reason_kind_groups_by_exception_type_and_first_words():
    empty = "DecodeError: /a/b.mp4: the video file is empty (0 bytes); re-copy it"
    assert reason_kind(empty) == reason_kind(empty.replace("/a/b.mp4", "s3://x/sub 2/c.mp4"))
    assert reason_kind(empty).startswith("DecodeError: the video file is empty")
    assert reason_kind(empty) != reason_kind(empty.replace("DecodeError", "InputError"))
    a = reason_kind("onset frame 12 is after offset frame 3 (sheet row 4)")
    assert a == reason_kind("onset frame 140 is after offset frame 99 (sheet row 17)")
    assert reason_kind("clip folder /d/sub01/EP1 holds no image frames") == reason_kind(
        "clip folder /d/sub07/EP9 holds no image frames"
    )
    assert reason_kind("") == "(no reason)"


def test_rejects_are_grouped_by_reason(tmp_path, data):
    cfg = cfg_for(tmp_path, data, "keyframes.max_reject_fraction=0.9")
    manifest = with_bad_clips(load_manifest("synthetic", data), tmp_path / "bad")
    build_keyframes_dataset(cfg, manifest, use_ray=False, progress=lambda s: None)
    uri = keyframes_uri(cfg)
    _, clips, _ = read_keyframes(uri, frames=False)
    summary = summarise_dataset(clips, read_rejects(uri))

    assert summary["rejects"]["total"] == 5
    groups = summary["rejects"]["by_reason"]
    # Largest group first: the two emotions outside the protocol, one reason.
    assert groups[0]["clips"] == ["synthetic/yy/e1", "synthetic/yy/e2"]
    assert groups[0]["stages"] == {"manifest": 2}
    by_clip = {c: g["reason"] for g in groups for c in g["clips"]}
    assert by_clip["synthetic/zz/badjpeg"].startswith("DecodeError: cannot decode")
    # Same exception type, different problems: a missing folder, frames outside the clip.
    assert by_clip["synthetic/zz/missing"].startswith("InputError: no such video file")
    assert by_clip["synthetic/zz/outside"].startswith("InputError: frames N..N are outside")
    assert summary["clips"] == 6  # the bad clips are not counted as clips
    text = format_summary(summary)
    assert "rejects: 5" in text and "2 x emotion … is outside" in text and "e.g. " in text


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 10  # something was drawn
    return pixels.shape[1], pixels.shape[0]


def test_contact_sheets_one_per_requested_clip(run, tmp_path):
    _, uri = run
    out = tmp_path / "look"
    summary = inspect_keyframes(uri, str(out), clips=3, progress=lambda s: None)

    sheets = sorted(os.listdir(out / "sheets"))
    assert len(sheets) == 3 == len(summary["sheets"])
    _, clips, _ = read_keyframes(uri, frames=False)
    drawn = clips[clips["clip"].isin([s["clip"].split("/")[-1] for s in summary["sheets"]])]
    assert sorted(drawn["label"]) == [0, 1, 2]  # spread over the classes
    for name in sheets:
        assert name.startswith("synthetic-sub0") and name.endswith(".png")
        w, h = png_size(out / "sheets" / name)
        assert 800 <= w <= 3000 and 300 <= h <= 1500, (w, h)
    assert json.loads((out / "summary.json").read_text())["clips"] == 6
    assert "contact sheets: 3" in (out / "summary.txt").read_text()


def test_recomputed_motion_curve_is_the_one_that_placed_the_key_frames(run):
    cfg, uri = run
    _, clips, _ = read_keyframes(uri, frames=False)
    kf = keyframe_settings(cfg.keyframes)
    for rec in clips.iloc[:2].to_dict("records"):
        curve = clip_motion(rec, kf)
        assert len(curve) == rec["offset"] - rec["onset"] + 1
        placed = adaptive_positions(curve, rec["apex"] - rec["onset"], 8) + rec["onset"]
        np.testing.assert_array_equal(np.round(placed), np.round(rec["keyframe_indices"]))


def test_contact_sheet_without_motion_curve(tmp_path):
    rng = np.random.default_rng(0)
    record = {
        "dataset": "d",
        "subject": "s/1",
        "clip": "c 1",
        "label": 1,
        "emotion": "happiness",
        "onset": 10,
        "apex": 14,
        "offset": 30,
        "apex_source": "spotted",
        "keyframe_indices": [10.0, 12.0, 14.0, 14.5, 20.0, 30.0],
        "frames": rng.integers(0, 255, (6, 16, 16, 1), dtype=np.uint8),
    }
    path = contact_sheet(record, None, str(tmp_path / "x.png"), note="source gone")
    png_size(path)
    assert choose_clips(pd.DataFrame({"label": [0, 0, 0, 1]}), 2, seed=1)[-1] == 3


def test_table_of_several_parts_whose_sources_are_gone(tmp_path):
    from mer.keyframes.table import read_clip_frames
    from mer.testing.fakes import write_random_keyframes

    uri = write_random_keyframes(str(tmp_path / "kf"), subjects=2, clips=3, part_size=2)
    summary = inspect_keyframes(uri, str(tmp_path / "out"), clips=4, progress=lambda s: None)
    assert len(summary["sheets"]) == 4 == len(os.listdir(tmp_path / "out" / "sheets"))
    assert all(s["note"].startswith("no motion curve") for s in summary["sheets"])
    _, clips, frames = read_keyframes(uri)
    rows = clips.iloc[[0, 3, 5]]
    keys = list(zip(rows["dataset"], rows["subject"], rows["clip"], strict=True))
    got = read_clip_frames(uri, keys)  # the right clip's frames from each part
    for i, rec in rows.iterrows():
        np.testing.assert_array_equal(got[(rec["dataset"], rec["subject"], rec["clip"])], frames[i])


def test_inspect_dataset_without_key_frames(tmp_path):
    data = tmp_path / "data"
    generate(str(data), subjects=2, clips_per_subject=3, seed=1, size=(96, 80), frames=(40, 50))
    manifest = load_manifest("synthetic", str(data))
    broken = manifest.sort_values("clip").iloc[0]
    frame = sorted(os.listdir(broken["source"]))[3]
    with open(os.path.join(broken["source"], frame), "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")
    cfg = cfg_for(tmp_path / "run", data)
    names = [f"{broken['subject']}/{broken['clip']}", manifest.iloc[-1]["clip"]]
    summary = inspect_dataset(cfg, str(tmp_path / "out"), names=names, progress=lambda s: None)

    assert summary["clips"] == len(manifest)
    assert summary["classes"] == {
        c: int((manifest["label"] == i).sum()) for i, c in enumerate(summary["classes"])
    }
    assert len(summary["sheets"]) == 1 and len(summary["failed"]) == 1
    assert summary["failed"][0]["reason"].startswith("DecodeError")
    png_size(summary["sheets"][0]["uri"])
    assert not os.path.exists(keyframes_uri(cfg))  # looking builds no table


def run_job(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "jobs/inspection.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_help():
    res = run_job("--help")
    assert res.returncode == 0, res.stderr
    assert "--keyframes" in res.stdout and "--dataset" in res.stdout


def test_cli_on_the_table_and_on_the_dataset_root(run, tmp_path):
    cfg, uri = run
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())

    res = run_job("--config", str(path), "--clips", "2")
    assert res.returncode == 0, res.stderr
    out = os.path.join(cfg.root, "inspect", os.path.basename(uri))
    assert len(os.listdir(os.path.join(out, "sheets"))) == 2
    assert "clips per subject and class" in res.stdout and "key-frame table" in res.stdout

    res = run_job("--config", str(path), "--dataset", "--clips", "1", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["source"]["kind"] == "dataset" and summary["clips"] == 6
    assert len(os.listdir(tmp_path / "d" / "sheets")) == 1

    res = run_job("--config", str(path), "--keyframes", str(tmp_path / "nothing"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "_meta.json" in res.stderr
