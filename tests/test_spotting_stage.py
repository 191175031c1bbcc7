"""The spotting stage: windows with bounded memory, Ray Data and in-process agree, scores
become typed intervals, thresholds never see the test subject, a run's outputs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from spotting_videos import make_set, write_video
from tests_paths import REPO

from mer import config, layout
from mer.datasets.long_videos import Interval
from mer.errors import ConfigError
from mer.spotting import learned, spotters
from mer.spotting.peaks import PeakSettings, intervals_from_peaks, intervals_from_score
from mer.spotting.run import COLUMNS, run_spotting, spot_new_videos
from mer.spotting.stage import VideoFeatures, compute_features, process_window, window_items
from mer.spotting.windows import WindowSettings, plan_windows
from mer.train.runtime import Worker


@pytest.mark.parametrize("n,fps", [(7, 30.0), (90, 30.0), (1001, 200.0), (12000, 200.0)])
def test_windows_own_every_frame_once_and_hold_one_window(n, fps):
    ws = WindowSettings()
    length = min(ws.frames(fps)[0], n)
    wins = plan_windows("v", [f"f{i}" for i in range(n)], fps, ws)
    owned = np.concatenate([np.arange(w.owned[0], w.owned[1] + 1) for w in wins])
    np.testing.assert_array_equal(owned, np.arange(n))
    assert all(len(w.uris) == w.stop - w.start + 1 == length for w in wins)
    assert all(w.start <= w.owned[0] <= w.owned[1] <= w.stop for w in wins)


def test_window_memory_does_not_grow_with_the_video(tmp_path):
    # A 60 s video at 30 fps, 120 windows of 0.5 s: a worker measuring any one of them holds
    # a small fraction of what the whole video would take as grey copies.
    n, ws = 1800, WindowSettings(side=64, window_s=0.5)
    write_video(tmp_path / "long", n, [(900, 908, 0.8)], size=64)
    vid = make_set_video(tmp_path / "long", n)
    items, rejects = window_items([vid], ws)
    assert not rejects and len(items) > 100
    process_window(items[1])  # one-time allocations (OpenCV's eye detector) out of the way
    peaks = [process_window(items[i])["peak_bytes"] for i in (0, len(items) // 2, -1)]
    whole = n * ws.side * ws.side  # bytes of the video's grey copies
    assert max(peaks) < 0.1 * whole
    assert max(peaks) < 1.5 * min(peaks)  # the last window holds no more than the first
    # The measure sees the frames a window holds: a window 8x as long peaks higher by at
    # least half its extra frames' grey copies.
    longer = dataclasses.replace(ws, window_s=4.0)
    items8, _ = window_items([vid], longer)
    extra = (len(items8[0]["uris"]) - len(items[0]["uris"])) * ws.side * ws.side
    assert process_window(items8[0])["peak_bytes"] > max(peaks) + 0.5 * extra


def make_set_video(folder, n):
    from mer.datasets.long_videos import LongVideo

    return LongVideo("synthetic_long", "s1", "long", str(folder), 30.0, n, 1)


def test_unreadable_frame_rejects_its_video_and_the_run_goes_on(tmp_path):
    vset = make_set(tmp_path, subjects=2, n=40)
    (tmp_path / "s2_v1" / "img20.png").write_bytes(b"not a png")
    feats, rejects, _ = compute_features(
        vset.videos, WindowSettings(side=64), use_ray=False, progress=lambda m: None
    )
    assert list(feats) == ["s1_v1"]
    assert len(rejects) == 1 and rejects[0]["clip"] == "s2_v1"
    assert "img20.png" in rejects[0]["reason"]


def test_score_runs_become_typed_intervals():
    fps, ps = 100.0, PeakSettings(micro_max_s=0.5, merge_gap_s=0.1, min_s=0.05)
    s = np.zeros(400)
    s[10:30] = 1.0  # 0.2 s: micro
    s[35:45] = 2.0  # 5 frames after it: merged with it (0.35 s, still micro)
    s[100:103] = 1.0  # 0.03 s: too short
    s[200:290] = 1.5  # 0.9 s: macro
    got = intervals_from_score("v", s, 0.5, fps, 1000, ps)
    assert [(i.onset, i.offset, i.type, i.score) for i in got] == [
        (1010, 1044, "micro", 2.0),
        (1200, 1289, "macro", 1.5),
    ]


def test_peaks_become_fixed_length_intervals_suppressed_within_their_length():
    fps = 100.0
    ps = PeakSettings(micro_max_s=0.5, merge_gap_s=0.1, min_s=0.05, rule="peaks")
    s = np.zeros(500)
    s[1:6] = [0.8, 1.0, 1.2, 1.0, 0.8]  # a peak at frame 3: its interval starts at frame 0
    s[40:66] = 1.0
    s[50], s[60] = 3.0, 2.0  # two peaks 0.1 s apart in one short run
    s[145:156] = 1.5  # a plateau: one peak, at its middle (150)
    s[250:350] = 1.0  # a 1 s run: a macro-expression, given once whatever its peaks
    s[270], s[320] = 2.5, 2.0
    s[400] = 5.0  # one frame above the threshold: shorter than min_s, no interval
    got = intervals_from_peaks("v", s, 0.5, fps, 1000, ps, length_s=0.3)
    assert [(i.onset, i.offset, i.type, i.score) for i in got] == [
        (1000, 1029, "micro", 1.2),
        (1035, 1064, "micro", 3.0),  # the peak at 60 is within 0.3 s of the higher one
        (1135, 1164, "micro", 1.5),
        (1250, 1349, "macro", 2.5),
    ]
    # With intervals of 0.08 s the peak at 60 is far enough from the one at 50 to stay.
    short = intervals_from_peaks("v", s, 0.5, fps, 1000, ps, length_s=0.08)
    assert [(i.onset, i.offset) for i in short if 1030 < i.onset < 1100] == [
        (1046, 1053),
        (1056, 1063),
    ]
    # No local maximum above the threshold, no interval.
    assert intervals_from_peaks("v", s, 5.0, fps, 1000, ps, length_s=0.3) == []


def _bump_features(subject: str, height: float, where: int) -> VideoFeatures:
    motion = np.full(300, 0.01, np.float32)
    motion[where : where + 10] = height
    blocks = np.tile(motion[:, None], (1, 4))
    return VideoFeatures(f"{subject}_v", subject, 30.0, 0, motion, blocks)


def test_a_folds_threshold_never_depends_on_its_test_subject():
    feats = {f"s{k}_v": _bump_features(f"s{k}", 0.5 + 0.1 * k, 50 + 20 * k) for k in range(4)}
    truth = [Interval(f"s{k}_v", 50 + 20 * k, 59 + 20 * k, "micro") for k in range(4)]
    ps = PeakSettings()
    base = {r.test_subject: r.threshold for r in spotters.loso_rule("motion", feats, truth, ps)}
    # Move s0's ground truth away: s0's own fold keeps its threshold; the others may not.
    moved = [Interval("s0_v", 200, 209, "micro"), *truth[1:]]
    again = {r.test_subject: r.threshold for r in spotters.loso_rule("motion", feats, moved, ps)}
    assert again["s0"] == base["s0"]
    # The learned spotter's folds train on the other subjects' videos only.
    for fold in learned.fold_plan(feats, "/nowhere"):
        if fold["subject"] != spotters.FINAL:
            assert all(not n.startswith(fold["subject"] + "_") for n in fold["train"])
        else:
            assert len(fold["train"]) == 4


def test_a_folds_peak_rule_choice_uses_its_training_subjects_only():
    # Bumps of different widths per subject: the interval length matters to the F1.
    feats = {}
    truth = []
    for k in range(4):
        motion = np.full(300, 0.01, np.float32)
        where, width = 50 + 20 * k, 6 + 2 * k
        motion[where : where + width] = np.hanning(width + 2)[1:-1] * (0.5 + 0.1 * k)
        feats[f"s{k}_v"] = VideoFeatures(
            f"s{k}_v", f"s{k}", 30.0, 0, motion, np.tile(motion[:, None], (1, 4))
        )
        truth.append(Interval(f"s{k}_v", where, where + width - 1, "micro"))
    ps = PeakSettings(rule="peaks")

    def chosen(t):
        return {
            r.test_subject: (r.threshold, r.length_s, r.train_f1)
            for r in spotters.loso_rule("motion", feats, t, ps)
        }

    base = chosen(truth)
    assert all(length in ps.lengths_s for _, length, _ in base.values())
    # s0's ground truth moved away and made longer: s0's fold chooses as before; the folds
    # that train on s0 see the change.
    moved = [Interval("s0_v", 200, 214, "micro"), *truth[1:]]
    again = chosen(moved)
    assert again["s0"] == base["s0"]
    assert again["s1"][2] < base["s1"][2]


def test_the_interval_rule_keys_the_spotting_run_not_the_features():
    default = config.load(None, [])
    peaks = config.load(None, ["spotting.interval_rule=peaks"])
    other_lengths = config.load(
        None, ["spotting.interval_rule=peaks", "spotting.peak_lengths_s=[0.3]"]
    )
    hashes = {layout.spotting_hash(c) for c in (default, peaks, other_lengths)}
    assert len(hashes) == 3
    assert layout.spotting_features_uri(peaks) == layout.spotting_features_uri(default)
    with pytest.raises(ConfigError, match="spotting.interval_rule"):
        config.load(None, ["spotting.interval_rule=nms"])
    with pytest.raises(ConfigError, match="spotting.peak_lengths_s"):  # longer than a micro
        config.load(None, ["spotting.interval_rule=peaks", "spotting.peak_lengths_s=[0.6]"])


def test_run_writes_intervals_metric_and_refuses_other_settings(tmp_path):
    vset = make_set(tmp_path / "videos", subjects=3, n=60)
    overrides = [
        f"root={tmp_path / 'run'}",
        f"spotting.root={tmp_path / 'videos'}",
        "spotting.side=64",
        "spotting.spotters=[motion, mdmd]",
    ]
    cfg = config.load(None, overrides)
    run = run_spotting(cfg, vset, use_ray=False, progress=lambda m: None)
    csv = pd.read_csv(f"{run.out}/intervals.csv")
    assert list(csv.columns) == COLUMNS
    parquet = pd.read_parquet(f"{run.out}/intervals.parquet")
    assert len(parquet) == len(csv) == len(run.intervals)
    assert set(run.metric) == {"motion", "mdmd"}
    assert set(run.thresholds["mdmd"]["folds"]) == {"s1", "s2", "s3"}
    assert run.thresholds["mdmd"]["final"] is not None
    assert run_spotting(cfg, vset, use_ray=False, progress=lambda m: None).skipped
    # Another micro-expression limit is another folder; a folder claimed by other settings
    # is refused in one sentence.
    other = config.load(None, [*overrides, "spotting.micro_max_s=0.3"])
    assert layout.spotting_uri(other) != run.out
    other.spotting.micro_max_s = 0.5
    other.spotting.min_s = 0.1
    with pytest.raises(ConfigError, match="spotting.min_s"):
        layout.claim(run.out, layout.spotting_settings(other), "spotting results", "x")
    # The peaks rule: another folder, and each fold's interval length beside its threshold.
    peaks = config.load(None, [*overrides, "spotting.interval_rule=peaks"])
    again = run_spotting(peaks, vset, use_ray=False, progress=lambda m: None)
    assert again.out != run.out and not again.skipped
    folds = again.thresholds["motion"]["folds"]
    assert all(f["length_s"] in peaks.spotting.peak_lengths_s for f in folds.values())
    assert "length_s" not in run.thresholds["motion"]["folds"]["s1"]
    # New videos are spotted with the final threshold and interval length.
    final = again.thresholds["motion"]["final"]
    found, _, used = spot_new_videos(
        again.out, "motion", vset.videos[:1], use_ray=False, progress=lambda m: None
    )
    assert (used["threshold"], used["length_s"]) == (final["threshold"], final["length_s"])
    length = round(final["length_s"] * vset.videos[0].fps)
    micro = [i for i in found if i.type == "micro"]
    assert micro and all(i.offset - i.onset + 1 == length for i in micro)


def test_ray_data_windows_match_in_process(ray_local, tmp_path):
    vset = make_set(tmp_path / "videos", subjects=2, n=45)
    ws = WindowSettings(side=64)
    quiet = dict(progress=lambda m: None)
    here, _, _ = compute_features(vset.videos, ws, use_ray=False, **quiet)
    there, rejects, profile = compute_features(vset.videos, ws, use_ray=True, **quiet)
    assert not rejects and profile["windows"] == 4  # 2 videos x 2 windows of 1 s
    for name in here:
        np.testing.assert_array_equal(here[name].motion, there[name].motion)
        np.testing.assert_array_equal(here[name].blocks, there[name].blocks)


def test_learned_spotter_trains_every_fold_in_one_data_parallel_ray_train_run(ray_local, tmp_path):
    vset = make_set(tmp_path / "videos", subjects=2, n=45)
    there, _, _ = compute_features(
        vset.videos, WindowSettings(side=64), use_ray=False, progress=lambda m: None
    )
    resources = config.ResourcesConfig(workers=2)
    ls = learned.LearnedSettings(epochs=1, hidden=4, crop=16, batch=4)
    out = str(tmp_path / "learned")
    results = learned.loso_learned(there, vset.intervals, PeakSettings(), ls, out, resources)
    assert [r.test_subject for r in results] == ["s1", "s2", spotters.FINAL]
    assert all(0 < r.threshold < 1 for r in results)
    for subject in ("s1", "s2", spotters.FINAL):
        assert (tmp_path / "learned" / f"fold-{subject}.pt").exists()
    assert (tmp_path / "learned" / "_runs" / "learned").is_dir()  # Ray Train's run folder
    # Two workers, each drawing half of every batch, their gradients averaged: not the
    # network one process trains on whole batches with the same seed (which is what each
    # of two workers trained on its own, the chief's written, before the run was
    # data-parallel).
    alone = str(tmp_path / "alone")
    learned.train_loso(there, vset.intervals, ls, alone, resources, use_ray=False)
    n_inputs = 1 + next(iter(there.values())).blocks.shape[1]
    for subject in ("s1", spotters.FINAL):
        a = learned.load_fold(out, subject, n_inputs, ls).state_dict()
        b = learned.load_fold(alone, subject, n_inputs, ls).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a), subject


def test_a_learned_spotter_worker_draws_its_share_of_each_batch():
    shares = [learned.worker_share(16, Worker(r, 3, torch.device("cpu"))) for r in range(3)]
    assert shares == [6, 5, 5]
    assert learned.worker_share(16, Worker(0, 1, torch.device("cpu"))) == 16
    assert learned.worker_share(2, Worker(3, 4, torch.device("cpu"))) == 1  # never none


def test_spot_job_without_a_dataset_root_is_one_sentence(tmp_path):
    cmd = [
        sys.executable,
        "jobs/spot.py",
        "--root",
        str(tmp_path),
        "--set",
        "spotting.dataset=samm_lv",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "spotting.dataset=samm_lv needs spotting.root" in done.stderr
    assert "Traceback" not in done.stderr
