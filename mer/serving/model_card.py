"""The model card: what a final model is, what it expects, where it came from and how good it
is, as JSON (model_card.json, for programs) and Markdown (MODEL_CARD.md, for people).

Sections: classes and label mapping; input spec (key-frame settings, input mode,
normalisation, the shortest usable clip); files (weights and portable program, with their
hashes and the check of one against the other); training (how the configuration was chosen,
its parameters, seed, budget); the resolved config and every upstream hash (data, key
frames, prior, run, experiment: mer.layout); data provenance (dataset, clips, subjects,
protocol); evaluation (the chosen configuration's LOSO score, the nested-LOSO estimate when
there is one, with intervals, and the baselines on the same folds and seeds: mer.evaluation.results);
limitations (docs/limitations.md's, and those of this model's data and size).
"""

from __future__ import annotations

import collections
import platform
import time

import numpy as np

from mer import layout
from mer.config import NUM_CLASSES, PipelineConfig
from mer.datasets import class_names
from mer.datasets.common import THREE_CLASS
from mer.evaluation import results
from mer.serving.clip_keyframes import MIN_FRAMES
from mer.serving.model_folder import CARD_FORMAT
from mer.serving.quality import markdown as quality_markdown
from mer.train.data import describe_normalisation

SCORE_KEYS = ("uf1", "uar", "accuracy")

# What docs/limitations.md says, as it bears on using the model.
LIMITATIONS = [
    "Only the paper's abstract is available: key-frame placement, pair sampling, the head "
    "and the freezing details are this project's reconstruction; no figure here reproduces "
    "the paper's.",
    "Head motion is compensated as one translation per frame; rotation and scale are not, "
    "and very large head jumps can be missed.",
    "Apex spotting (used when a clip has no annotated apex, e.g. whole-clip inference) was "
    "tuned on synthetic data; an annotated apex is more reliable.",
    "A clip is assumed to hold one micro-expression between its onset and offset: the model "
    "always answers one of its classes (there is no 'no expression' class) and does not find "
    "expressions inside long recordings; jobs/predict.py flags clips unlike the training "
    "clips (the card's trust section) and --abstain answers 'unknown' for them.",
    "Clips should resemble the training clips (face framing as in training, see "
    "input.keyframes.face_crop; frame rate; resolution): the scores describe only such data.",
]


def class_words(cfg: PipelineConfig) -> tuple[list[str], dict[str, list[str]]]:
    """(class names by index, class -> the emotion words mapped to it) of cfg's protocol."""
    names = class_names(cfg.data.protocol, cfg.data.dataset)
    if names is None:
        names = [f"class{i}" for i in range(NUM_CLASSES[cfg.data.protocol])]
        return names, {name: [] for name in names}
    if cfg.data.protocol == "3class":
        words = {i: sorted(w for w, c in THREE_CLASS.items() if c == i) for i in range(3)}
        return names, {name: words[i] for i, name in enumerate(names)}
    return names, {name: [name] for name in names}


def input_spec(cfg: PipelineConfig) -> dict:
    kf = cfg.to_dict()["keyframes"]
    builder = {k: v for k, v in kf.items() if k not in layout.KEYFRAMES_EXECUTION}
    norm = describe_normalisation(cfg.model.input)
    return {
        "clip": (
            "a video file (frames numbered from 0) or a folder of numbered frame images "
            "(the number is the last run of digits in the file name); the interval "
            "onset..offset is inclusive, in the source's own numbering; apex annotated, or "
            f"spotted when not given; at least {MIN_FRAMES} frames"
        ),
        "keyframes": builder,
        "keyframes_builder": "mer.keyframes.clip_records.build_record (decode, registration, apex, "
        "adaptive key frames) with exactly these settings",
        "tensor": {
            "dtype": "uint8",
            "shape": ["N", cfg.keyframes.k, cfg.keyframes.size, cfg.keyframes.size, 3],
            "layout": "N, K key frames, S, S, RGB",
        },
        "channels": 3,
        "input_mode": cfg.model.input,
        "normalisation": norm + "; the model sees N, C, K, S, S (mer.train.data.to_tensor)",
    }


def data_provenance(cfg: PipelineConfig, keyframes: str, table, subjects: list[str]) -> dict:
    """What the model learnt from: the clips of `subjects` in the key-frame table."""
    clips = table.clips.iloc[table.indices_of(subjects)]
    labels = clips["label"].value_counts().sort_index()
    out = {
        "dataset": cfg.data.dataset,
        "datasets": sorted(clips["dataset"].unique().tolist()),
        "protocol": cfg.data.protocol,
        "clips": int(len(clips)),
        "subjects": len(subjects),
        "subject_keys": sorted(subjects),
        "clips_per_class": {str(int(k)): int(v) for k, v in labels.items()},
        "apex_annotated": int((clips["apex_source"] == "annotated").sum()),
        "keyframes_uri": keyframes,
        "keyframes_table_clips": int(len(table.clips)),
        "keyframes_rejected": table.meta.get("counts", {}).get("rejected"),
    }
    if cfg.data.dataset == "synthetic":
        out["synthetic"] = dict(cfg.data.synthetic)
    else:
        out.update(root=layout.data_root(cfg), annotations=cfg.data.annotations)
    return out


def _scores(row: dict | None) -> dict | None:
    if row is None:
        return None
    keep = {
        k: v
        for k, v in row.items()
        if k.startswith(SCORE_KEYS)
        or k in ("clips", "folds_done", "folds_total", "seeds_done", "status", "rank", "standing")
    }
    if "per_seed" in row:
        keep["per_seed"] = row["per_seed"]
    return keep


def evaluation(exp, choice: dict) -> dict:
    """The chosen configuration's scores, the nested estimate where there is one and the
    baselines on the same folds and seeds (mer.evaluation.results.summary)."""

    s = results.summary(exp)
    rows = {r["config_id"]: r for r in s["leaderboard"] + s["incomplete"]}
    out = {
        "experiment": exp.uri,
        "folds": s["folds_total"],
        "seeds": s["seeds"],
        "statistics": s["statistics"],
        "loso_search": {
            "protocol": "loso-search",
            "note": s["note"],
            **(_scores(rows.get(choice["config_id"])) or {"status": "no finished fold"}),
        },
        "baselines": {b: _scores(rows.get(b)) for b in s["baselines"]},
    }
    if "nested" in s:
        n = {k: v for k, v in s["nested"].items() if k != "choices"}
        n["choices_per_config"] = dict(
            collections.Counter(c["config_id"] for c in s["nested"].get("choices", []))
        )
        out["nested_loso"] = n
    if "nested" in s and choice["rule"] == "nested-loso":
        out["estimate"] = "nested_loso"
        out["estimate_note"] = (
            "nested-loso is the honest estimate: for each held-out subject the configuration "
            "was chosen on the other subjects only, by the rule that chose this model's; the "
            "loso-search score was measured on the folds it was chosen on (optimistic)"
        )
    else:
        out["estimate"] = "loso_search"
        out["estimate_note"] = (
            "loso-search: if the configuration was chosen by this score, it is optimistic "
            "(search.protocol: nested gives an honest estimate)"
        )
    if exp.meta.get("dataset") == "megc2019":
        out["published"] = {
            "note": "MEGC2019 composite, UF1 / UAR as published",
            "LBP-TOP": [0.588, 0.579],
            "STSTNet": [0.735, 0.761],
            "Dual-Inception": [0.732, 0.728],
        }
    return out


def limitations(cfg: PipelineConfig, data: dict) -> list[str]:
    out = list(LIMITATIONS)
    if cfg.data.dataset == "synthetic":
        out.insert(
            0,
            "Trained and scored on synthetic faces (mer.datasets.synthetic.generator): a test bed for "
            "the pipeline, not a model of real micro-expressions; do not use it on people.",
        )
    if cfg.model.width < 0.5 or cfg.keyframes.size < 64:
        out.append(
            f"A demo-sized network (model.width {cfg.model.width:g}, key frames "
            f"{cfg.keyframes.size} px, input {cfg.model.input})."
        )
    out.append(
        f"Learnt from {data['clips']} clips of {data['subjects']} subjects; with so few "
        "subjects the intervals of the scores are wide."
    )
    return out


def build_card(
    cfg: PipelineConfig,
    *,
    name: str,
    training: dict,
    data: dict,
    hashes: dict,
    files: dict,
    evaluation: dict | None,
) -> dict:
    """The card as a JSON-ready dict."""
    import ray
    import torch

    classes, mapping = class_words(cfg)
    return {
        "format": CARD_FORMAT,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task": "micro-expression recognition: one clip (onset..offset) -> class probabilities",
        "method": "MERSiamC3D (Zhao et al., Neurocomputing 448, 2021), as reconstructed here: "
        "adaptive key frames, siamese C3D prior learning, target learning with focal loss",
        "classes": classes,
        "label_mapping": mapping,
        "input": input_spec(cfg),
        "files": files,
        "training": training,
        "config": cfg.to_dict(),
        "hashes": hashes,
        "data": data,
        "evaluation": evaluation,
        "limitations": limitations(cfg, data),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "ray": ray.__version__,
        },
    }


def markdown(card: dict) -> str:
    """MODEL_CARD.md: the card for people (model_card.json has everything)."""
    t, d, i = card["training"], card["data"], card["input"]
    w, p = card["files"]["weights"], card["files"]["portable"]
    kf = i["keyframes"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"{card['task']}. {card['method']}.",
        "",
        "## Classes",
        "",
        "| index | class | emotion words mapped to it |",
        "|---|---|---|",
    ]
    for n, c in enumerate(card["classes"]):
        lines.append(f"| {n} | {c} | {', '.join(card['label_mapping'].get(c, [])) or '-'} |")
    lines += [
        "",
        "## Input",
        "",
        f"- Clip: {i['clip']}.",
        f"- Key frames: K={kf['k']}, S={kf['size']}, method {kf['method']}, motion "
        f"{kf['motion']}, interpolation {kf['interpolation']}, face_crop {kf['face_crop']}, "
        f"stabilize {kf['stabilize']}, registration {kf['registration']} "
        f"({i['keyframes_builder']}).",
        f"- Tensor: {i['tensor']['dtype']} {i['tensor']['shape']} ({i['tensor']['layout']}).",
        f"- Input mode `{i['input_mode']}`: {i['normalisation']}.",
        "",
        "## Files",
        "",
        f"- `{w['file']}`: {w['format']} (sha256 {w['sha256'][:16]}...).",
        f"- `{p['file']}`: {p['format']}; `{p['load']}`; {p['input']} -> {p['output']}. "
        f"Checked against the PyTorch model on {p['check']['clips']} clips: largest "
        f"difference {p['check']['max_abs_diff']:.2g} (tolerance {p['check']['tolerance']:g}).",
    ]
    if "interpolator" in card["files"]:
        f = card["files"]["interpolator"]
        lines.append(f"- `{f['file']}`: {f['format']} (sha256 {f['sha256'][:16]}...).")
    lines += [
        "",
        "## Training",
        "",
    ]
    for key in ("rule", "note", "experiment", "config_id", "params", "seed", "run", "epochs"):
        if t.get(key) not in (None, ""):
            lines.append(f"- {key}: {t[key]}")
    lines += [
        f"- hashes: {', '.join(f'{k} {v}' for k, v in card['hashes'].items() if v)}",
        "",
        "## Data",
        "",
        f"- {d['dataset']} ({', '.join(d['datasets'])}), protocol {d['protocol']}: "
        f"{d['clips']} clips of {d['subjects']} subjects; clips per class "
        f"{d['clips_per_class']}; apex annotated in {d['apex_annotated']}.",
        f"- Key frames: {d['keyframes_uri']}.",
        "",
        "## Evaluation",
        "",
    ]
    ev = card.get("evaluation")
    if not ev:
        lines.append("No search experiment scored this model.")
    else:
        lines += [
            f"Pooled over {ev['folds']} LOSO folds, seeds {ev['seeds']}; {ev['statistics']}.",
            "",
            "| entry | protocol | UF1 | UAR | accuracy |",
            "|---|---|---|---|---|",
        ]
        rows = []
        if "nested_loso" in ev:
            rows.append(("selection rule (honest estimate)", "nested-loso", ev["nested_loso"]))
        rows.append((f"config {t.get('config_id')}", "loso-search", ev["loso_search"]))
        rows += [(f"baseline: {b}", "loso-search", s) for b, s in ev["baselines"].items()]
        for label, protocol, s in rows:
            cells = [_cell(s, m) for m in SCORE_KEYS]
            lines.append(f"| {label} | {protocol} | {' | '.join(cells)} |")
        lines += ["", ev["estimate_note"] + "."]
        if "published" in ev:
            pub = ", ".join(
                f"{k} {v[0]} / {v[1]}" for k, v in ev["published"].items() if k != "note"
            )
            lines.append(f"Published ({ev['published']['note']}): {pub}.")
    if card.get("trust"):
        lines += ["", *quality_markdown(card["trust"])]
    if card.get("spotting"):
        lines += ["", *spotting_markdown(card["spotting"])]
    lines += ["", "## Limitations", ""]
    lines += [f"- {x}" for x in card["limitations"]]
    return "\n".join(lines) + "\n"


def with_spotting(card: dict, used: dict) -> dict:
    """The card of a spot-then-recognise run: the model's card with a `spotting` section
    saying which spotter, spotting run and thresholds found the intervals it classified
    (`used`: mer.spotting.run.spot_new_videos's record)."""
    return {**card, "spotting": used}


def spotting_markdown(used: dict) -> list[str]:
    w, ps = used["window"], used["intervals"]
    return [
        "## Spotting (spot-then-recognise)",
        "",
        f"The clips classified here were spotted in long videos by the {used['spotter']} "
        f"spotter of the spotting run {used['run']} (settings {used['settings_hash']}, "
        f"dataset {used['dataset']}): threshold {used['threshold']:g} "
        f"({used['threshold_rule']}), chosen on every subject of that run "
        f"(micro F1 there {used['train_micro_f1']:.3f}). Windows of {w['window_s']:g} s, "
        f"grey copies {w['side']} px, {w['grid']} x {w['grid']} MDMD blocks; "
        f"{_interval_rule(ps, used.get('length_s'))}; intervals up to "
        f"{ps['micro_max_s']:g} s are micro-expressions. Only the micro-expression intervals "
        "were classified.",
    ]


def _interval_rule(ps: dict, length_s: float | None) -> str:
    runs = (
        f"runs above the threshold (runs closer than {ps['merge_gap_s']:g} s merged, shorter "
        f"than {ps['min_s']:g} s dropped)"
    )
    if ps.get("rule", "threshold") != "peaks":
        return "intervals are " + runs
    return (
        f"each local maximum above the threshold is the centre of a {length_s:g} s interval "
        "(a length chosen with the threshold), peaks closer than that to a higher one "
        f"suppressed; a peak in one of the {runs} longer than {ps['micro_max_s']:g} s gives "
        "that run"
    )


def _cell(s: dict | None, metric: str) -> str:
    if not s or s.get(metric) is None:
        return "-"
    text = f"{s[metric]:.3f}"
    if s.get(f"{metric}_sd") is not None:
        text += f" +- {s[f'{metric}_sd']:.3f}"
    if s.get(f"{metric}_lo") is not None:
        text += f" [{s[f'{metric}_lo']:.3f}, {s[f'{metric}_hi']:.3f}]"
    return text
