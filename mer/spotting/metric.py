"""The MEGC spotting metric and the spot-then-recognise score (STRS).

Spotting (MEGC since 2019/2020: Li et al., "Spotting micro-expressions on long videos
sequences", FG 2019; "MEGC2020 - the third facial micro-expression grand challenge", FG 2020):
  - a predicted interval is a true positive (TP) when its intersection over union with a
    ground-truth interval of the same type (micro or macro) in the same video is >= 0.5;
    frames are counted with both ends inclusive (onset..offset holds offset - onset + 1);
  - each ground truth is matched at most once and each prediction at most once; among the
    pairs with IoU >= 0.5 we take the largest one-to-one matching (augmenting paths), so no
    order of the predictions can lose a TP;
  - unmatched predictions are false positives (FP), unmatched ground truths false negatives
    (FN); counts are summed over videos, then precision = TP / (TP + FP), recall =
    TP / (TP + FN), F1 = 2PR / (P + R), each 0 where its denominator is 0 (as the challenge's
    code does: no predictions and no ground truth give F1 0);
  - reported per dataset and over all datasets, for micro, for macro, and for both ("all",
    the counts of the two types summed).

Spot-then-recognise (MEGC2023, Liong, See & Chan, "Spot-then-recognize: a micro-expression
analysis network for seamless evaluation of long videos", Signal Processing: Image
Communication 110, 2023):
  - spotting is scored as above on one type (micro);
  - the analysis task is scored on the spotted TPs only: each matched pair compares the
    ground truth's emotion with the prediction's; per class (one vs rest over those pairs)
    precision and recall, then P = mean of the class precisions, R = mean of the class
    recalls, analysis F1 = 2PR / (P + R); UF1 (mean class F1) and UAR (mean class recall)
    are reported beside it; the classes are the ground truth's emotions unless given;
  - STRS = spotting F1 x analysis F1.
Where the challenge's published code (pandas) differs from these definitions we follow the
definitions and say so in docs/spotting-data.md: it lets one prediction match several
ground truths, skips predictions in videos (and subjects) without ground truth, reports the
mean class precision as UAR, and scores a class as 0 when every pair is of that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mer.datasets.long_videos import EXPRESSION_TYPES, Interval, LongVideo
from mer.errors import InputError

IOU_THRESHOLD = 0.5
OVERALL = "overall"
ALL_TYPES = "all"


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class Match:
    predicted: Interval
    truth: Interval
    iou: float


@dataclass
class SpottingResult:
    """Counts per (dataset, type): each dataset and "overall"; "micro", "macro" and "all"."""

    counts: dict[tuple[str, str], Counts]
    matches: list[Match] = field(default_factory=list)
    false_positives: list[Interval] = field(default_factory=list)
    false_negatives: list[Interval] = field(default_factory=list)

    def f1(self, dataset: str = OVERALL, type: str = "micro") -> float:
        return self.counts.get((dataset, type), Counts()).f1

    def rows(self) -> list[dict]:
        """One dict per (dataset, type): dataset, type, tp, fp, fn, precision, recall, f1."""
        return [
            {
                "dataset": d,
                "type": t,
                "tp": c.tp,
                "fp": c.fp,
                "fn": c.fn,
                "precision": c.precision,
                "recall": c.recall,
                "f1": c.f1,
            }
            for (d, t), c in self.counts.items()
        ]


@dataclass(frozen=True)
class STRSResult:
    spotting: Counts  # of the spotted type
    analysis: Counts  # summed over classes: TP right emotion, FP / FN wrong, by class
    precision: float  # analysis: mean class precision
    recall: float  # analysis: mean class recall
    f1: float  # analysis: 2PR / (P + R)
    uf1: float  # mean class F1
    uar: float  # mean class recall
    strs: float  # spotting F1 x analysis F1
    classes: tuple[str, ...]


def interval_iou(a: Interval, b: Interval) -> float:
    """Frames in both / frames in either, both ends inclusive (0 for disjoint intervals)."""
    inter = min(a.offset, b.offset) - max(a.onset, b.onset) + 1
    if inter <= 0:
        return 0.0
    union = (a.offset - a.onset + 1) + (b.offset - b.onset + 1) - inter
    return inter / union


def match_intervals(
    truth: Sequence[Interval],
    predicted: Sequence[Interval],
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[list[Match], list[Interval], list[Interval]]:
    """(matches, unmatched predictions, unmatched truths) of one video and one type: the
    largest one-to-one matching among pairs with IoU >= iou_threshold."""
    ious = [[interval_iou(p, t) for t in truth] for p in predicted]
    # Candidates of each prediction, best IoU first (so ties resolve the same every run).
    candidates = [
        sorted((j for j in range(len(truth)) if row[j] >= iou_threshold), key=lambda j: -row[j])
        for row in ious
    ]
    owner: dict[int, int] = {}  # truth index -> prediction index

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(predicted)):
        augment(i, set())
    matched_pred = {i: j for j, i in owner.items()}
    matches = [Match(predicted[i], truth[j], ious[i][j]) for i, j in sorted(matched_pred.items())]
    fp = [p for i, p in enumerate(predicted) if i not in matched_pred]
    fn = [t for j, t in enumerate(truth) if j not in owner]
    return matches, fp, fn


def _datasets(
    truth: Sequence[Interval], predicted: Sequence[Interval], videos: Sequence[LongVideo] | None
) -> dict[str, str]:
    """video -> dataset; InputError for an interval whose video is not among `videos`."""
    if videos is None:
        return {i.video: "" for i in [*truth, *predicted]}
    out: dict[str, str] = {}
    for v in videos:
        if out.setdefault(v.video, v.dataset) != v.dataset:
            raise InputError(
                f"video {v.video!r} is in both {out[v.video]} and {v.dataset}; score the two "
                "datasets separately"
            )
    for what, intervals in (("ground-truth", truth), ("predicted", predicted)):
        for i in intervals:
            if i.video not in out:
                raise InputError(f"a {what} interval names video {i.video!r}, not in the set")
    return out


def _check_types(intervals: Sequence[Interval], what: str) -> None:
    for i in intervals:
        if i.type not in EXPRESSION_TYPES:
            raise InputError(
                f"{what} interval {i.video} {i.onset}..{i.offset} has type {i.type!r}; "
                f"expected one of {EXPRESSION_TYPES}"
            )


def spotting_metric(
    truth: Sequence[Interval],
    predicted: Sequence[Interval],
    videos: Sequence[LongVideo] | None = None,
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> SpottingResult:
    """MEGC spotting counts of `predicted` against `truth`, per dataset (from `videos`; all
    in one unnamed dataset when None) and overall, per type and for both types."""
    _check_types(truth, "ground-truth")
    _check_types(predicted, "predicted")
    dataset_of = _datasets(truth, predicted, videos)
    groups: dict[tuple[str, str], tuple[list, list]] = {}
    for which, intervals in ((0, truth), (1, predicted)):
        for i in intervals:
            groups.setdefault((i.video, i.type), ([], []))[which].append(i)
    datasets = sorted({d for d in dataset_of.values() if d})
    counts = {
        (d, t): Counts() for d in [*datasets, OVERALL] for t in (*EXPRESSION_TYPES, ALL_TYPES)
    }
    result = SpottingResult(counts)
    for (video, kind), (gt, pred) in sorted(groups.items()):
        matches, fp, fn = match_intervals(gt, pred, iou_threshold=iou_threshold)
        c = Counts(len(matches), len(fp), len(fn))
        for d in {dataset_of[video] or OVERALL, OVERALL}:
            counts[d, kind] += c
            counts[d, ALL_TYPES] += c
        result.matches += matches
        result.false_positives += fp
        result.false_negatives += fn
    return result


def strs_metric(
    truth: Sequence[Interval],
    predicted: Sequence[Interval],
    videos: Sequence[LongVideo] | None = None,
    *,
    classes: Sequence[str] | None = None,
    type: str = "micro",
    iou_threshold: float = IOU_THRESHOLD,
) -> STRSResult:
    """MEGC2023's spot-then-recognise score of `predicted` (intervals of `type` with an
    emotion each) against `truth`. `classes`: the emotions scored (default: those of the
    ground truth of that type); pairs whose true emotion is outside them are left out of
    the analysis, as the challenge's code does."""
    truth = [i for i in truth if i.type == type]
    predicted = [i for i in predicted if i.type == type]
    spotted = spotting_metric(truth, predicted, videos, iou_threshold=iou_threshold)
    if classes is None:
        classes = sorted({i.emotion for i in truth if i.emotion is not None})
    classes = tuple(classes)
    pairs = [(m.truth.emotion, m.predicted.emotion) for m in spotted.matches]
    pairs = [(t, p) for t, p in pairs if t in classes]
    per_class = [
        Counts(
            sum(t == c and p == c for t, p in pairs),
            sum(t != c and p == c for t, p in pairs),
            sum(t == c and p != c for t, p in pairs),
        )
        for c in classes
    ]
    n = max(len(classes), 1)
    precision = sum(c.precision for c in per_class) / n
    recall = sum(c.recall for c in per_class) / n
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    spot = spotted.counts[OVERALL, type]
    total = sum(per_class, Counts())
    return STRSResult(
        spotting=spot,
        analysis=total,
        precision=precision,
        recall=recall,
        f1=f1,
        uf1=sum(c.f1 for c in per_class) / n,
        uar=recall,
        strs=spot.f1 * f1,
        classes=classes,
    )
