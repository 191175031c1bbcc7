"""Long videos for spotting: the CAS(ME)^2 and SAMM-LV adapters on fixture trees in their
published layouts (local and S3), their bad-input rules, and the synthetic long videos."""

from __future__ import annotations

import importlib
from dataclasses import replace

import cv2
import numpy as np
import pytest
from tests_paths import REPO

from mer import storage
from mer.datasets import load_long_videos
from mer.datasets.long_videos import Interval
from mer.datasets.synthetic.faces import draw_face
from mer.datasets.synthetic.generator import workbook
from mer.datasets.synthetic.long_videos import (
    Event,
    generate_long,
    load_long,
    long_key,
    long_settings,
    plan_long,
    read_truth,
    render_video,
)
from mer.errors import ConfigError, InputError

# ---------------------------------------------------------------------------------------------
# Fixture trees.


def frames(folder, numbers, name):
    folder.mkdir(parents=True, exist_ok=True)
    ok, jpg = cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8))
    for n in numbers:
        (folder / name(n)).write_bytes(jpg.tobytes())


def write_workbook(path, sheets):
    path.write_bytes(workbook(sheets))


CASME_SQ_ROWS = [
    # subject, clip, onset, apex, offset, AUs, emotion, type, self-report
    [1, "disgust1_1", 5, 8, 12, "4+7", "negative", "micro-expression", "disgust"],
    [1, "disgust1_2", 20, 30, 45, "4", "negative", "macro-expression", "disgust"],
    [1, "disgust1_3", 50, 55, 0, "12", "positive", "micro-expression", "happy"],  # offset 0
    [2, "anger1_1", 3, 6, 9, "4", "Negative", "micro-expression", "anger"],
    [9, "anger1_1", 3, 6, 9, "4", "negative", "micro-expression", "anger"],  # no subject 9
    [1, "happy9_1", 3, 6, 9, "12", "positive", "micro-expression", "happy"],  # no stimulus
    [2, "anger1_2", 50, 55, 70, "4", "negative", "micro-expression", "anger"],  # past the end
    [2, "anger1_3", 30, 25, 20, "4", "negative", "macro-expression", "anger"],  # onset > offset
    [1, "anger1_1", 3, 6, 9, "4", "negative", "micro-expression", "anger"],  # folder missing
]


def casme_sq_tree(root, rows=CASME_SQ_ROWS):
    rawpic = root / "rawpic"
    frames(rawpic / "s15" / "15_0101disgustingteeth", range(1, 61), lambda n: f"img{n}.jpg")
    frames(rawpic / "s15" / "15_0502funnyerrors", range(1, 31), lambda n: f"img{n}.jpg")
    frames(rawpic / "s16" / "16_0401pickingupwallet", range(1, 61), lambda n: f"img{n}.jpg")
    (rawpic / "s16" / "16_0102eatingworms").mkdir(parents=True)  # an empty folder
    write_workbook(
        root / "CAS(ME)^2code_final.xlsx",
        [
            ("CASFEcode_final", rows),
            ("naming rule1", [[1, "s15", 1], [2, "16", 2], [3, "s17", 9]]),  # no rawpic/s17
            ("naming rule2", [[101, "disgust1"], [401, "anger1"], [502, "happy1"]]),
        ],
    )
    return root


SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset"]
SAMM_HEADER += ["Duration", "Type", "Action Units", "Notes"]
SAMM_ROWS = [
    ["006", "006_1_1", 1, 11, 20, 30, 20, "Micro - 1/2", "R12", None],
    ["006", "006_1_2", 1, 40, 70, 100, 61, "Macro", "6+12", None],
    ["006", "006_1_3", 1, 105, 110, 0, 0, "Micro - 1/2", "4", "offset not coded"],
    [7, "007_2_1", 2, 10, 20, 40, 31, "Micro - 1/2", "1+2", None],
    ["007", "007_2_2", 2, 100, 110, 130, 31, "Macro", "12", None],  # past the end
    ["008", "008_1_1", 1, 10, 20, 30, 21, "Micro - 1/2", "4", None],  # no folder
]


def samm_lv_tree(root, rows=SAMM_ROWS, header=SAMM_HEADER, length=120):
    videos = root / "SAMM_longvideos"
    frames(videos / "006_1", range(1, length + 1), lambda n: f"006_1_{n:05d}.jpg")
    frames(videos / "007_2", range(1, length + 1), lambda n: f"007_2_{n:05d}.jpg")
    frames(videos / "009_1", range(1, 21), lambda n: f"009_1_{n:05d}.jpg")  # no expression
    preamble = [["SAMM Long Videos (test fixture)"]] + [[None]] * 8
    write_workbook(root / "SAMM_LongVideos_V1_Release.xlsx", [("FACS", [*preamble, header, *rows])])
    return root


def reasons(found):
    return " | ".join(r["reason"] for r in found.rejects)


# ---------------------------------------------------------------------------------------------
# CAS(ME)^2.


def test_casme_sq_reads_videos_and_micro_and_macro_rows(tmp_path):
    found = load_long_videos("casme_sq", str(casme_sq_tree(tmp_path)))
    videos = {v.video: v for v in found.videos}
    assert sorted(videos) == [
        "15_0101disgustingteeth",
        "15_0502funnyerrors",
        "16_0401pickingupwallet",
    ]
    v = videos["15_0101disgustingteeth"]
    assert (v.dataset, v.subject, v.fps, v.n_frames, v.first_frame) == (
        "casme_sq",
        "s15",
        30.0,
        60,
        1,
    )
    assert v.frames == str(tmp_path / "rawpic" / "s15" / "15_0101disgustingteeth")
    assert found.intervals == [
        Interval("15_0101disgustingteeth", 5, 12, "micro", "negative"),
        Interval("15_0101disgustingteeth", 20, 45, "macro", "negative"),
        Interval("15_0101disgustingteeth", 50, 55, "micro", "positive"),  # ends at the apex
        Interval("16_0401pickingupwallet", 3, 9, "micro", "negative"),
    ]
    why = reasons(found)
    assert "16_0102eatingworms holds no images" in why
    assert "subject 9 has no folder under" in why
    assert "clip 'happy9_1' names no stimulus" in why
    assert "frames 50..70 are outside the video's frames 1..60" in why
    assert "onset 30 is after offset 20" in why
    assert "no folder for stimulus 0401 under" in why
    assert len(found.rejects) == 6


@pytest.mark.parametrize(
    "cell, column, message",
    [
        ("ten", 2, "is not a frame number"),
        ("blink", 7, "type 'blink' is neither a micro- nor a macro-expression"),
    ],
)
def test_casme_sq_broken_sheet_names_the_sheet_and_row(tmp_path, cell, column, message):
    rows = [list(r) for r in CASME_SQ_ROWS]
    rows[1][column] = cell
    casme_sq_tree(tmp_path, rows)
    with pytest.raises(InputError, match=rf"CASFEcode_final row 2.*{message}"):
        load_long_videos("casme_sq", str(tmp_path))


def test_casme_sq_sheet_with_a_header_and_no_naming_sheets_still_loads(tmp_path):
    casme_sq_tree(tmp_path)
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AUs", "Emotion", "Type", "Self"]
    rows = [
        [15, "0101_1", 5, 8, 12, "4+7", "negative", "micro-expression", "disgust"],
        [16, "0401_1", 20, 30, 45, "4", "negative", "macro-expression", "anger"],
        [16, "disgust1_1", 3, 6, 9, "4", "negative", "micro-expression", "disgust"],
    ]
    write_workbook(tmp_path / "CAS(ME)^2code_final.xlsx", [("Sheet1", [header, *rows])])
    found = load_long_videos("casme_sq", str(tmp_path))
    assert found.intervals == [
        Interval("15_0101disgustingteeth", 5, 12, "micro", "negative"),
        Interval("16_0401pickingupwallet", 20, 45, "macro", "negative"),
    ]
    assert "clip 'disgust1_1' names no stimulus" in reasons(found)


def test_casme_sq_missing_or_unreadable_workbook_is_an_input_error(tmp_path):
    casme_sq_tree(tmp_path)
    sheet = tmp_path / "CAS(ME)^2code_final.xlsx"
    sheet.write_bytes(b"not a workbook")
    with pytest.raises(InputError, match=r"code_final.xlsx: not a readable .xlsx workbook"):
        load_long_videos("casme_sq", str(tmp_path))
    sheet.unlink()
    with pytest.raises(InputError, match=r"annotation sheet .*code_final.xlsx not found"):
        load_long_videos("casme_sq", str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        load_long_videos("casme_sq", str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------
# SAMM Long Videos.


def test_samm_lv_reads_videos_and_typed_rows(tmp_path):
    found = load_long_videos("samm_lv", str(samm_lv_tree(tmp_path)))
    videos = {v.video: v for v in found.videos}
    assert sorted(videos) == ["006_1", "007_2", "009_1"]  # 009_1: no expression, still a video
    v = videos["006_1"]
    assert (v.dataset, v.subject, v.fps, v.n_frames, v.first_frame) == (
        "samm_lv",
        "006",
        200.0,
        120,
        1,
    )
    assert found.intervals == [
        Interval("006_1", 11, 30, "micro"),
        Interval("006_1", 40, 100, "macro"),
        Interval("006_1", 105, 110, "micro"),  # offset 0: ends at the apex
        Interval("007_2", 10, 40, "micro"),
    ]
    why = reasons(found)
    assert "frames 100..130 are outside the video's frames 1..120" in why
    assert "no folder 008_1 under" in why
    assert len(found.rejects) == 2


def test_samm_lv_finds_a_renamed_release_sheet_and_folder_case(tmp_path):
    samm_lv_tree(tmp_path)
    (tmp_path / "SAMM_LongVideos_V1_Release.xlsx").rename(tmp_path / "SAMM_LongVideos_V4.xlsx")
    (tmp_path / "SAMM_longvideos").rename(tmp_path / "SAMM_LongVideos")
    found = load_long_videos("samm_lv", str(tmp_path))
    assert len(found.intervals) == 4 and len(found.videos) == 3
    assert found.videos[0].frames == str(tmp_path / "SAMM_LongVideos" / "006_1")


def test_samm_lv_broken_sheet_names_the_sheet(tmp_path):
    header = [h if h != "Type" else "Kind" for h in SAMM_HEADER]
    samm_lv_tree(tmp_path, header=header)
    with pytest.raises(
        InputError, match=r"V1_Release.xlsx: the header row \(row 10\) has no 'Type'"
    ):
        load_long_videos("samm_lv", str(tmp_path))
    rows = [list(r) for r in SAMM_ROWS]
    rows[0][1] = "006_1"  # not <video>_<k>
    samm_lv_tree(tmp_path, rows=rows)
    with pytest.raises(InputError, match=r"row 11: Filename '006_1' is not <subject>_<video>_<k>"):
        load_long_videos("samm_lv", str(tmp_path))


def test_samm_lv_from_s3_matches_local(s3_endpoint, tmp_path):
    # Short videos (each frame is one S3 request): the rows past frame 30 are rejected.
    local = samm_lv_tree(tmp_path / "samm_lv", length=30)
    fs, _ = storage.filesystem("s3://mer-test")
    fs.put(str(local) + "/", "mer-test/datasets/samm_lv/", recursive=True)
    root = "s3://mer-test/datasets/samm_lv"
    remote = load_long_videos("samm_lv", root)
    expected = load_long_videos("samm_lv", str(local))
    assert remote.intervals == expected.intervals
    assert [(i.video, i.onset) for i in remote.intervals] == [("006_1", 11)]
    assert [replace(v, frames="") for v in remote.videos] == [
        replace(v, frames="") for v in expected.videos
    ]
    assert remote.videos[0].frames == f"{root}/SAMM_longvideos/006_1"
    assert [r["reason"].replace(root, "") for r in remote.rejects] == [
        r["reason"].replace(str(local), "") for r in expected.rejects
    ]


def test_unknown_long_dataset_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown long-video dataset 'casme2'"):
        load_long_videos("casme2", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Synthetic long videos.


@pytest.mark.parametrize(
    "layout, fps, seconds, first",
    [
        ("casme_sq", 30, 3.0, "rawpic/s15/15_0101disgustingteeth/img1.jpg"),
        ("samm_lv", 200, 2.0, "SAMM_longvideos/006_1/006_1_00001.jpg"),
    ],
)
def test_synthetic_long_videos_read_back_through_their_adapter(
    tmp_path, layout, fps, seconds, first
):
    found = generate_long(
        str(tmp_path),
        "tiny",
        layout=layout,
        seconds=seconds,
        micro=(1, 3),
        macro=(1, 1),
        macro_seconds=(0.6, 0.8),
    )
    assert (tmp_path / first).is_file()
    assert len(found.videos) == 2 and not found.rejects
    for v in found.videos:
        assert (v.dataset, v.fps, v.n_frames, v.first_frame) == (
            "synthetic_long",
            fps,
            round(seconds * fps),
            1,
        )
    truth = read_truth(str(tmp_path))
    expressions = [
        (r["video"], r["onset"], r["offset"], r["kind"])
        for r in truth
        if r["kind"] in ("micro", "macro")
    ]
    assert sorted(expressions) == sorted(
        (i.video, i.onset, i.offset, i.type) for i in found.intervals
    )
    assert {i.type for i in found.intervals} == {"micro", "macro"}
    image = cv2.imread(str(tmp_path / first), cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == (64, 64) and image.ndim == (2 if layout == "samm_lv" else 3)
    assert load_long(str(tmp_path)) == found


def test_synthetic_long_videos_are_deterministic(tmp_path):
    sheet = "CAS(ME)^2code_final.xlsx"
    frame = "rawpic/s16/16_0101disgustingteeth/img30.jpg"
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_long(str(tmp_path / name), "tiny", seed=seed, seconds=1.5)
    for name in (sheet, frame, "long_ground_truth.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / frame).read_bytes() != (tmp_path / "c" / frame).read_bytes()
    assert long_key("tiny", seed=3, seconds=1.5) != long_key("tiny", seed=4, seconds=1.5)


def test_a_set_is_reused_under_its_settings_and_refused_under_others(tmp_path):
    made = generate_long(str(tmp_path), "tiny", seconds=1.2)
    stamp = (tmp_path / "rawpic/s15/15_0101disgustingteeth/img1.jpg").stat().st_mtime_ns
    assert generate_long(str(tmp_path), "tiny", seconds=1.2) == made
    assert (tmp_path / "rawpic/s15/15_0101disgustingteeth/img1.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="made under other settings"):
        generate_long(str(tmp_path), "tiny", seconds=1.2, seed=1)


def test_plans_hold_0_to_5_micro_expressions_apart_from_the_macros_with_distractors():
    s = long_settings("casme_sq-like", subjects=10, videos_per_subject=4, seconds=30.0)
    plans = plan_long(s)
    micro_counts = []
    for p in plans:
        expressions = sorted(
            (e for e in p.events if e.kind in ("micro", "macro")), key=lambda e: e.start
        )
        for a, b in zip(expressions, expressions[1:], strict=False):
            assert b.start - a.end > 0.3 * 30  # never overlapping, 0.3 s apart
        for e in expressions:
            seconds = (e.end - e.start + 1) / 30
            assert 0.1 <= seconds <= 0.55 if e.kind == "micro" else 0.55 <= seconds <= 3.1
            assert 0 <= e.start <= e.apex <= e.end < p.n_frames
        micro_counts.append(sum(e.kind == "micro" for e in expressions))
    assert min(micro_counts) == 0 and max(micro_counts) == 5
    blinks = sum(e.kind == "blink" for p in plans for e in p.events)
    turns = sum(e.kind == "head_turn" for p in plans for e in p.events)
    # About 15 blinks and 2 head turns a minute over 40 videos of 30 s.
    assert 200 < blinks < 400 and 20 < turns < 60


def test_expressions_move_the_face_and_macros_more_than_micros():
    # Nuisances off: frames change only where an expression is, and a macro-expression
    # (4-8 px) moves the face more than a micro-expression (0.5-2 px).
    s = long_settings("tiny", size=(96, 80))
    plan = replace(
        plan_long(s)[0],
        n_frames=60,
        events=(
            Event("micro", 5, 9, 14, "happiness", "12", 1.5),
            Event("macro", 30, 40, 50, "surprise", "1+2", 6.0),
        ),
        sway=(0.0, 10.0, 0.0, 0.0),
        roll=(0.0, 10.0, 0.0),
        flicker=(0.0, 1.0, 0.0),
        noise=0.0,
    )
    face = draw_face(np.random.default_rng(0), (96, 80))
    video = np.stack(list(render_video(face, plan, 30, np.random.default_rng(0)))).astype(float)
    change = np.abs(video - video[0]).mean(axis=(1, 2, 3))
    assert change[20:28].max() == 0 and change[55:].max() == 0
    assert change[9] > 0.05 and change[40] > 3 * change[9]


def test_unknown_long_preset_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown long-video preset"):
        long_settings("realistic")
    with pytest.raises(ConfigError, match="unknown long-video option"):
        long_settings("tiny", blink_rate=3)


def test_synth_long_job_writes_a_set_and_prints_its_key(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "jobs"))  # as `python jobs/synth_long.py` runs
    job = importlib.import_module("synth_long")
    out = tmp_path / "long"
    args = [str(out), "--preset", "tiny", "--set", "seconds=1.2", "--set", "micro=[1,1]"]
    summary = job.main(args)
    assert summary["key"] == long_key("tiny", seconds=1.2, micro=(1, 1))
    assert summary["videos"] == 2 and summary["frames"] == 2 * 36
    assert f'"key": "{summary["key"]}"' in capsys.readouterr().out
    assert load_long_videos("synthetic_long", str(out)).videos[0].dataset == "synthetic_long"
    with pytest.raises(SystemExit) as refused:  # other settings, same folder: exit 2
        job.main([str(out), "--preset", "tiny", "--set", "seed=5"])
    assert refused.value.code == 2
    assert "made under other settings" in capsys.readouterr().err
