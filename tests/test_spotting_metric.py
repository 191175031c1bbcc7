"""The MEGC spotting metric and STRS (mer.spotting.metric): the challenge's worked example,
a hand-counted set over two datasets and both types, and the edge cases."""

import pytest

from mer.datasets.long_videos import Interval, LongVideo
from mer.errors import InputError
from mer.spotting.metric import (
    Counts,
    interval_iou,
    match_intervals,
    spotting_metric,
    strs_metric,
)


def micro(video, onset, offset, emotion=None):
    return Interval(video, onset, offset, "micro", emotion)


def macro(video, onset, offset):
    return Interval(video, onset, offset, "macro")


def video(dataset, name):
    return LongVideo(dataset, name.split("/")[0], name, f"/frames/{name}", 30.0, 1000, 1)


def test_strs_reproduces_the_challenge_examples_numbers():
    # The brief example of MEGC2023's published STRS code (Liong, See & Chan): five CASME II
    # videos of two subjects, one ground truth and one prediction each. Its README gives
    # STRS 0.2; the other figures are what its code prints for the same input (run under
    # pandas 1.5). Video names are subject/video (ours must be unique in a dataset).
    truth = [
        micro("1/EP02_01f", 45, 85, "happiness"),
        micro("1/EP03_02", 130, 160, "others"),
        micro("1/EP04_02", 20, 75, "others"),
        micro("2/EP01_11f", 45, 95, "repression"),
        micro("2/EP02_04f", 30, 140, "repression"),
    ]
    predicted = [
        micro("1/EP02_01f", 10, 70, "happiness"),
        micro("1/EP03_02", 100, 170, "others"),
        micro("1/EP04_02", 0, 70, "others"),
        micro("2/EP01_11f", 20, 90, "happiness"),
        micro("2/EP02_04f", 70, 140, "happiness"),
    ]
    r = strs_metric(truth, predicted)
    assert r.spotting == Counts(tp=3, fp=2, fn=2)
    assert r.spotting.precision == pytest.approx(0.6)
    assert r.spotting.recall == pytest.approx(0.6)
    assert r.spotting.f1 == pytest.approx(0.6)
    assert r.analysis == Counts(tp=1, fp=2, fn=2)
    assert r.classes == ("happiness", "others", "repression")
    assert r.precision == pytest.approx(1 / 3)
    assert r.recall == pytest.approx(1 / 3)
    assert r.f1 == pytest.approx(1 / 3)
    assert r.uf1 == pytest.approx(1 / 3)
    assert r.strs == pytest.approx(0.2)


def test_spotting_counts_per_dataset_type_and_overall():
    # Hand-counted: two datasets, micro and macro in the same video, an FP of the wrong type.
    videos = [video("casme_sq", "a"), video("samm_lv", "b")]
    truth = [micro("a", 100, 109), macro("a", 200, 259), micro("b", 10, 49), micro("b", 300, 339)]
    predicted = [
        micro("a", 102, 111),  # IoU 8/12 with the micro: TP
        micro("a", 205, 255),  # the macro's frames but typed micro: FP (and the macro is FN)
        micro("b", 20, 59),  # IoU 30/50 = 0.6: TP
        micro("b", 330, 369),  # IoU 10/70: FP (and 300..339 is FN)
        macro("b", 500, 599),  # no macro there: FP
    ]
    r = spotting_metric(truth, predicted, videos)
    assert r.counts["casme_sq", "micro"] == Counts(1, 1, 0)
    assert r.counts["casme_sq", "macro"] == Counts(0, 0, 1)
    assert r.counts["casme_sq", "all"] == Counts(1, 1, 1)
    assert r.counts["samm_lv", "micro"] == Counts(1, 1, 1)
    assert r.counts["samm_lv", "macro"] == Counts(0, 1, 0)
    assert r.counts["overall", "micro"] == Counts(2, 2, 1)
    assert r.counts["overall", "macro"] == Counts(0, 1, 1)
    assert r.counts["overall", "all"] == Counts(2, 3, 2)
    assert r.f1("overall", "micro") == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert r.f1("casme_sq", "all") == pytest.approx(0.5)
    assert {(m.truth.onset, m.predicted.onset) for m in r.matches} == {(100, 102), (10, 20)}
    rows = {(x["dataset"], x["type"]): x for x in r.rows()}
    assert rows["samm_lv", "micro"]["precision"] == pytest.approx(0.5)
    assert rows["samm_lv", "micro"]["recall"] == pytest.approx(0.5)


def test_iou_counts_frames_inclusively_and_exactly_half_is_a_hit():
    # 1..10 and 6..15: 5 shared frames of 15 -> 1/3; 1..10 and 1..20: 10 of 20 -> exactly 0.5.
    assert interval_iou(micro("v", 1, 10), micro("v", 6, 15)) == pytest.approx(1 / 3)
    assert interval_iou(micro("v", 1, 10), micro("v", 11, 20)) == 0.0
    assert interval_iou(micro("v", 1, 10), micro("v", 1, 20)) == 0.5
    r = spotting_metric([micro("v", 1, 10)], [micro("v", 1, 20)])
    assert r.counts["overall", "micro"] == Counts(1, 0, 0)
    # Just below a half (10 of 21) is a miss: one FP and one FN.
    r = spotting_metric([micro("v", 1, 10)], [micro("v", 1, 21)])
    assert r.counts["overall", "micro"] == Counts(0, 1, 1)


def test_no_predictions_and_no_ground_truth():
    truth = [micro("v", 1, 10), micro("v", 50, 60)]
    r = spotting_metric(truth, [])
    assert r.counts["overall", "micro"] == Counts(0, 0, 2)
    assert (r.f1(), r.counts["overall", "micro"].precision) == (0.0, 0.0)
    r = spotting_metric([], [micro("v", 1, 10)])
    assert r.counts["overall", "micro"] == Counts(0, 1, 0)
    assert r.f1() == 0.0
    # Nothing at all: every count 0 and F1 0 (the challenge's convention), no error.
    r = spotting_metric([], [], [video("casme_sq", "v")])
    assert r.counts["casme_sq", "all"] == Counts() and r.f1("casme_sq", "all") == 0.0


def test_one_prediction_over_two_ground_truths_matches_one():
    # 1..20 has IoU 0.5 with 1..10 and 19/20 with 2..20 (overlapping truths): one TP, one FN.
    truth = [micro("v", 1, 10), micro("v", 2, 20)]
    r = spotting_metric(truth, [micro("v", 1, 20)])
    assert r.counts["overall", "micro"] == Counts(1, 0, 1)
    assert r.matches[0].truth.onset == 2  # the better IoU
    # Two identical predictions on one truth: one TP and one FP.
    r = spotting_metric([micro("v", 1, 10)], [micro("v", 1, 10), micro("v", 1, 10)])
    assert r.counts["overall", "micro"] == Counts(1, 1, 0)


def test_matching_finds_the_largest_one_to_one_set_whatever_the_order():
    # p1 fits both truths, p2 only the first: a greedy pass taking p1 -> t1 first would leave
    # p2 unmatched; the largest matching pairs p1 -> t2 and p2 -> t1.
    t1, t2 = micro("v", 1, 10), micro("v", 3, 12)
    p1, p2 = micro("v", 2, 11), micro("v", 1, 7)
    assert interval_iou(p1, t1) >= 0.5 and interval_iou(p1, t2) >= 0.5
    assert interval_iou(p2, t1) >= 0.5 and interval_iou(p2, t2) < 0.5
    for order in ([p1, p2], [p2, p1]):
        matches, fp, fn = match_intervals([t1, t2], order)
        assert {(m.predicted, m.truth) for m in matches} == {(p1, t2), (p2, t1)}
        assert fp == [] and fn == []


def test_predictions_in_videos_without_ground_truth_are_false_positives():
    videos = [video("samm_lv", "a"), video("samm_lv", "empty")]
    r = spotting_metric([micro("a", 1, 10)], [micro("a", 1, 10), micro("empty", 5, 9)], videos)
    assert r.counts["samm_lv", "micro"] == Counts(1, 1, 0)


def test_intervals_outside_the_set_or_of_unknown_type_are_input_errors():
    with pytest.raises(InputError, match="'elsewhere'"):
        spotting_metric([], [micro("elsewhere", 1, 5)], [video("casme_sq", "a")])
    with pytest.raises(InputError, match="type 'blink'"):
        spotting_metric([], [Interval("a", 1, 5, "blink")])
    clash = [video("casme_sq", "a"), video("samm_lv", "a")]
    with pytest.raises(InputError, match="both casme_sq and samm_lv"):
        spotting_metric([], [], clash)


def test_strs_scores_only_the_spotted_micro_intervals_and_given_classes():
    truth = [
        micro("v", 1, 10, "negative"),
        micro("v", 100, 110, "positive"),
        micro("v", 200, 210, "surprise"),
        macro("v", 300, 360),
    ]
    predicted = [
        micro("v", 1, 10, "negative"),  # TP, right
        micro("v", 100, 110, "negative"),  # TP, wrong
        micro("v", 500, 510, "surprise"),  # FP: not in the analysis
        macro("v", 300, 360),  # macro: not scored by STRS
    ]
    r = strs_metric(truth, predicted, classes=["negative", "positive", "surprise"])
    assert r.spotting == Counts(2, 1, 1)
    # negative: P 1/2, R 1; positive: P 0, R 0; surprise: no pairs, 0 and 0.
    assert r.precision == pytest.approx((0.5 + 0 + 0) / 3)
    assert r.recall == pytest.approx((1 + 0 + 0) / 3)
    assert r.uar == r.recall
    assert r.uf1 == pytest.approx((2 / 3) / 3)
    assert r.spotting.f1 == pytest.approx(2 / 3)
    p, rc = 0.5 / 3, 1 / 3
    assert r.strs == pytest.approx(2 / 3 * 2 * p * rc / (p + rc))
    # No spotted pair at all: STRS 0.
    assert strs_metric(truth, [micro("v", 700, 710, "negative")]).strs == 0.0
