"""Look at a dataset or a key-frame table before training on it.

Two things a researcher checks first with a new dataset copy or a new key-frame setting:
- a summary: clips per subject and class, class totals, rejects grouped by reason, where
  the apexes come from (annotated or spotted), clip lengths (`summarise_dataset`,
  `format_summary`);
- contact sheets, one PNG per clip: its K key frames with the apex key frame marked, the
  apex-minus-onset key-frame difference, and the motion curve with the K chosen positions,
  the apex and the curve's own peak (`contact_sheet`).

`inspect_keyframes` draws from a finished key-frame table (mer.keyframes.table); `inspect_dataset`
from a dataset root without key frames, building each drawn clip's record on the fly with
mer.keyframes.clip_records.build_record. The motion curve is not stored in the table, so `clip_motion`
decodes the clip again with the steps build_record takes (`prepare_clip`).
jobs/inspection.py is the command line.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from mer import layout, storage
from mer.datasets import class_names, load_manifest
from mer.errors import DecodeError, InputError
from mer.keyframes.clip_records import build_record, manifest_rows, prepare_clip
from mer.keyframes.motion import smooth, spot_apex
from mer.keyframes.settings import KeyframeSettings, keyframe_settings
from mer.keyframes.table import (
    REJECT_COLUMNS,
    read_clip_frames,
    read_keyframes,
    read_meta,
    read_rejects,
)
from mer.progress import emit

# A clip's input that cannot be used (as mer.keyframes.preprocess treats it): drawn without a curve, or
# listed as a failed sheet, never a crash of the whole inspection.
UNUSABLE = (InputError, DecodeError)


# ---------------------------------------------------------------- summary


def reason_kind(reason: str) -> str:
    """What a reject reason says, without the clip's particulars: its exception type and
    the first words of its message, with the leading URI, quoted names, paths and numbers
    blanked ("DecodeError: /d/s1/img7.jpg: cannot decode this frame image ..." ->
    "DecodeError: cannot decode this frame image ...")."""
    m = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception|Timeout)):\s*(.*)", reason, re.S)
    kind, text = (m.group(1), m.group(2)) if m else ("", reason)
    text = re.sub(r"^(\w+://)?[^:]*[/\\][^:]*:\s+", "", text)  # the "<uri>: " of most
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"\S*[/\\]\S*", "…", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
    words = text.split()
    what = " ".join(words[:6]) + (" …" if len(words) > 6 else "")
    return f"{kind}: {what}" if kind and what else kind or what or "(no reason)"


def summarise_dataset(
    clips: pd.DataFrame,
    rejects: pd.DataFrame | list[dict],
    *,
    classes: tuple[str, ...] | None = None,
) -> dict:
    """A JSON-ready summary of a manifest or a key-frame table's clips and its rejects.

    `clips` has the manifest's columns (dataset, subject, clip, label, emotion, onset, apex,
    offset, fps) and, from a key-frame table, apex_source and keyframe_indices. `classes`
    names the label indices (else "class N").
    """
    rejects = pd.DataFrame(list(rejects) if isinstance(rejects, list) else rejects)
    rejects = rejects.reindex(columns=REJECT_COLUMNS).fillna("")
    df = clips.reset_index(drop=True)
    name = _namer(classes)
    cls = df["label"].astype(int).map(name) if len(df) else pd.Series(dtype=str)
    subject = df["dataset"].astype(str) + "/" + df["subject"].astype(str)
    order = [name(i) for i in sorted(df["label"].astype(int).unique())] if len(df) else []
    by_subject = pd.crosstab(subject, cls).reindex(columns=order, fill_value=0)
    summary: dict = {
        "clips": len(df),
        "subjects": int(subject.nunique()),
        "datasets": _counts(df["dataset"]) if len(df) else {},
        "classes": {c: int((cls == c).sum()) for c in order},
        "by_subject": {s: {c: int(n) for c, n in row.items()} for s, row in by_subject.iterrows()},
        "emotions": {c: _counts(df.loc[cls == c, "emotion"].astype(str)) for c in order}
        if "emotion" in df
        else {},
        "apex_sources": _apex_sources(df),
        "rejects": _rejects(rejects),
    }
    summary.update(_lengths(df))
    if "keyframe_indices" in df and len(df):
        positions = [np.asarray(p, float) for p in df["keyframe_indices"]]
        flat = np.concatenate(positions)
        summary["keyframes"] = {
            "k": sorted({len(p) for p in positions}),
            # Positions that share a source frame are interpolated (mer.keyframes.construction).
            "interpolated_share": round(float(np.mean(flat != np.round(flat))), 4),
        }
    return summary


def _namer(classes: tuple[str, ...] | None) -> Callable[[int], str]:
    return lambda i: classes[i] if classes and 0 <= i < len(classes) else f"class {i}"


def _counts(values: pd.Series) -> dict:
    return {str(k): int(v) for k, v in values.value_counts().sort_index().items()}


def _apex_sources(df: pd.DataFrame) -> dict:
    if "apex_source" in df:
        return _counts(df["apex_source"].astype(str))
    if "apex" not in df:
        return {}
    # A manifest: an apex the sheet leaves out (<NA>) will be spotted on the motion curve.
    annotated = int(df["apex"].notna().sum())
    return {"annotated": annotated, "spotted": len(df) - annotated}


def _rejects(rejects: pd.DataFrame) -> dict:
    groups = []
    if len(rejects):
        kinds = rejects["reason"].astype(str).map(reason_kind)
        for kind, g in rejects.groupby(kinds, sort=False):
            names = (g["dataset"] + "/" + g["subject"] + "/" + g["clip"]).tolist()
            groups.append(
                {
                    "reason": kind,
                    "count": len(g),
                    "stages": _counts(g["stage"].astype(str)),
                    "example": str(g["reason"].iloc[0]),
                    "clips": names[:5],
                }
            )
    groups.sort(key=lambda g: (-g["count"], g["reason"]))
    return {"total": len(rejects), "by_reason": groups}


def _stats(values: np.ndarray, digits: int = 1) -> dict:
    return {
        "min": round(float(values.min()), digits),
        "median": round(float(np.median(values)), digits),
        "mean": round(float(values.mean()), digits),
        "max": round(float(values.max()), digits),
    }


def _lengths(df: pd.DataFrame) -> dict:
    """Clip lengths (frames, seconds) and where the apex lies within the clip."""
    if not len(df) or not {"onset", "offset"} <= set(df):
        return {}
    onset = df["onset"].astype(float).to_numpy()
    offset = df["offset"].astype(float).to_numpy()
    frames = offset - onset + 1
    out = {"frames": _stats(frames)}
    if "fps" in df:
        fps = pd.to_numeric(df["fps"], errors="coerce").astype(float).to_numpy()
        ok = np.isfinite(fps) & (fps > 0)
        if ok.any():
            out["duration_s"] = _stats(frames[ok] / fps[ok], 3)
            out["fps"] = sorted({float(f) for f in fps[ok]})
    if "apex" in df:
        apex = pd.to_numeric(df["apex"], errors="coerce").astype(float).to_numpy()
        ok = np.isfinite(apex) & (frames > 1)
        if ok.any():
            # 0 = at the onset, 1 = at the offset.
            out["apex_position"] = _stats((apex[ok] - onset[ok]) / (frames[ok] - 1), 3)
    return out


def format_summary(summary: dict) -> str:
    """The summary as text: the subject x class table, totals, rejects, apexes, lengths."""
    lines = []
    src = summary.get("source", {})
    if src:
        where = src.get("uri") or src.get("root", "")
        lines.append(f"{src.get('kind', '')} {where}".strip())
        if src.get("settings"):
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in src["settings"].items()))
    datasets = ", ".join(f"{d} {n}" for d, n in summary["datasets"].items())
    lines.append(
        f"{summary['clips']} clips, {summary['subjects']} subjects"
        + (f" ({datasets})" if datasets else "")
    )
    if summary["by_subject"]:
        table = pd.DataFrame(summary["by_subject"]).T.fillna(0).astype(int)
        table = table.reindex(columns=list(summary["classes"]), fill_value=0)
        table["total"] = table.sum(axis=1)
        table.loc["total"] = table.sum(axis=0)
        table.index.name = "subject"
        lines += ["", "clips per subject and class:", table.to_string()]
    if summary.get("emotions"):
        lines += ["", "emotions per class:"]
        for c, words in summary["emotions"].items():
            lines.append(f"  {c}: " + ", ".join(f"{w} {n}" for w, n in words.items()))
    rejects = summary["rejects"]
    lines += ["", f"rejects: {rejects['total']}"]
    for g in rejects["by_reason"]:
        more = ", ..." if g["count"] > len(g["clips"]) else ""
        lines.append(f"  {g['count']:4d} x {g['reason']} ({', '.join(g['clips'])}{more})")
        lines.append(f"         e.g. {g['example']}")
    if summary["apex_sources"]:
        apexes = ", ".join(f"{s} {n}" for s, n in summary["apex_sources"].items())
        lines += ["", f"apex: {apexes}"]
    for key, unit in (("frames", "frames"), ("duration_s", "s"), ("apex_position", "")):
        if key in summary:
            s = summary[key]
            label = {"duration_s": "duration", "apex_position": "apex (0 onset, 1 offset)"}
            label = label.get(key, "length")
            lines.append(
                f"{label}: min {s['min']:g}, median {s['median']:g}, mean {s['mean']:g}, "
                f"max {s['max']:g} {unit}".rstrip()
            )
    if "keyframes" in summary:
        kf = summary["keyframes"]
        share = 100 * kf["interpolated_share"]
        lines.append(f"key frames: K={kf['k']}, {share:.1f} % of positions interpolated")
    if "sheets" in summary:
        lines += ["", f"contact sheets: {len(summary['sheets'])}"]
        for s in summary["sheets"]:
            lines.append(f"  {s['uri']}" + (f"  ({s['note']})" if s.get("note") else ""))
    for f in summary.get("failed", []):
        lines.append(f"  no sheet for {f['clip']}: {f['reason']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- contact sheets


def choose_clips(clips: pd.DataFrame, n: int, seed: int = 0) -> list[int]:
    """Row positions of `n` clips spread over the classes: a seeded shuffle per class,
    taken in turn class by class; returned in table order."""
    rng = np.random.default_rng(seed)
    labels = clips["label"].astype(int).to_numpy()
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(n, len(clips)):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(int(q.pop(0)))
    return sorted(chosen)


def select_clips(clips: pd.DataFrame, names: list[str]) -> list[int]:
    """Row positions of the clips named "clip", "subject/clip" or "dataset/subject/clip"."""
    full = (clips["dataset"] + "/" + clips["subject"] + "/" + clips["clip"]).tolist()
    chosen = []
    for name in names:
        hits = [i for i, f in enumerate(full) if f == name or f.endswith("/" + name)]
        if not hits:
            example = f"; names look like {full[0]!r}" if full else ""
            raise InputError(f"no clip named {name!r}{example}")
        chosen += hits
    return sorted(set(chosen))


def clip_motion(row: dict, kf: KeyframeSettings) -> np.ndarray:
    """The motion curve mer.keyframes.clip_records.build_record measures for a clip, float (T,)
    over its frames onset..offset (prepare_clip, the steps build_record takes). `row` needs
    source, onset and offset; `kf` the keyframes.* settings."""
    return prepare_clip(row, kf).motion.curve


def sheet_name(record: dict) -> str:
    """<dataset>-<subject>-<clip>.png; in each name anything but letters, digits, _ and . is
    replaced by _ (so "-" only separates)."""
    parts = [str(record[c]) for c in ("dataset", "subject", "clip")]
    return "-".join(re.sub(r"[^\w.]+", "_", p) for p in parts) + ".png"


def contact_sheet(
    record: dict,
    motion: np.ndarray | None,
    out_uri: str,
    *,
    annotated_apex: int | None = None,
    note: str = "",
) -> str:
    """Draw one clip's contact sheet as a PNG at `out_uri` (local or s3://); returns it.

    `record` is a key-frame record (DESIGN.md; frames K,S,S,C uint8, positions in source
    frame numbers). `motion` is the clip's motion curve over onset..offset (clip_motion) or
    None (then only the positions are drawn). `annotated_apex` (source frame) is marked
    too where it differs from the apex the key frames used.
    """
    from matplotlib.figure import Figure

    frames = np.asarray(record["frames"])
    positions = np.asarray(record["keyframe_indices"], float)
    onset, offset, apex = int(record["onset"]), int(record["offset"]), int(record["apex"])
    k = len(frames)
    at_apex = int(np.argmin(np.abs(positions - apex)))
    at_onset = int(np.argmin(np.abs(positions - onset)))

    fig = Figure(figsize=(max(1.25 * k, 10.0), 5.2), dpi=100, layout="constrained")
    fig.suptitle(
        f"{record['dataset']} / {record['subject']} / {record['clip']}: {record['emotion']} "
        f"(label {record['label']}); frames {onset}..{offset}, apex {apex} "
        f"({record['apex_source']})" + (f"; {note[:90]}" if note else ""),
        fontsize=10,
    )
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.9])
    for i, ax in enumerate(top.subplots(1, k, squeeze=False)[0]):
        image = frames[i]
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        title, colour = f"{positions[i]:g}", "black"
        if i == at_apex:
            near = "" if abs(positions[i] - apex) < 0.5 else "near "  # "uniform" may miss it
            title, colour = f"{near}apex {positions[i]:g}", "red"
        elif i == at_onset:
            title = f"onset {positions[i]:g}"
        ax.set_title(title, fontsize=8, color=colour)
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3 if i == at_apex else 0.5)

    left, ax = bottom.subplots(1, 2, width_ratios=[1, 3])
    # Apex minus onset key frame, signed: red where the apex key frame is brighter.
    diff = frames[at_apex].astype(np.float32).mean(-1) - frames[at_onset].astype(np.float32).mean(
        -1
    )
    lim = max(float(np.abs(diff).max()), 1.0)
    im = left.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
    left.set_xticks([])
    left.set_yticks([])
    left.set_title("apex - onset key frame (grey levels)", fontsize=8)
    bottom.colorbar(im, ax=left, shrink=0.8).ax.tick_params(labelsize=7)

    if motion is not None and len(motion):
        curve = np.asarray(motion, float)
        x = onset + np.arange(len(curve))
        ax.plot(x, curve, color="0.7", lw=1, label="motion")
        ax.plot(x, smooth(curve), color="tab:blue", lw=1.5, label="smoothed")
        level = np.interp(positions, x, curve)
        peak = onset + spot_apex(None, 0, motion=curve)
        ax.plot([peak], [np.interp(peak, x, curve)], "^", color="tab:green", label="curve peak")
    else:
        level = np.zeros_like(positions)
        ax.text(0.5, 0.6, "motion curve unavailable", ha="center", transform=ax.transAxes)
    ax.plot(positions, level, "o", color="tab:orange", ms=5, label=f"{k} key frames")
    ax.axvline(apex, color="red", lw=1.2, label=f"apex ({record['apex_source']})")
    if annotated_apex is not None and not pd.isna(annotated_apex) and int(annotated_apex) != apex:
        ax.axvline(int(annotated_apex), color="red", ls="--", lw=1, label="annotated apex")
    ax.set_xlim(onset - 0.5, offset + 0.5)
    ax.set_xlabel("source frame", fontsize=8)
    ax.set_ylabel("motion from onset", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=6, frameon=False)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    storage.write_bytes(out_uri, buf.getvalue())
    return out_uri


# ---------------------------------------------------------------- a few clips in one image

GRID_CLIPS = 6  # rows of a key-frame grid at most: one clip per class up to this many


@dataclasses.dataclass
class GridClip:
    """One row of a key-frame grid: the clip, its class and where its key frames lie."""

    dataset: str
    subject: str
    clip: str
    label: int
    class_name: str
    apex: int  # source frame
    positions: list[float]  # source frame of each key frame, left to right

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.clip}"


@dataclasses.dataclass
class KeyframeGrid:
    """A few clips' key frames as one PNG (keyframe_grid), and what each row shows."""

    uri: str  # the key-frame table they were read from
    clips: list[GridClip]
    png: bytes


def keyframe_grid(
    uri: str, classes: list[str] | None = None, clips: int | None = None, seed: int = 0
) -> KeyframeGrid:
    """One image of a few clips of the finished key-frame table at `uri`: a row per clip, its
    K key frames left to right, each titled with its position in the source clip (the one
    nearest the apex in red), the row labelled dataset/subject/clip and class. `clips` rows
    (default one per class, at most GRID_CLIPS) chosen by choose_clips with `seed`; `classes`
    names the label indices (else "class N")."""
    from matplotlib.figure import Figure

    _, table, _ = read_keyframes(uri, frames=False)
    table = table.sort_values(["dataset", "subject", "clip"]).reset_index(drop=True)
    n = clips or min(GRID_CLIPS, int(table["label"].nunique()))
    rows = table.iloc[choose_clips(table, n, seed)].to_dict("records")
    frames = read_clip_frames(uri, [_key(r) for r in rows])
    name = _namer(tuple(classes) if classes else None)
    picked = [
        GridClip(
            dataset=str(r["dataset"]),
            subject=str(r["subject"]),
            clip=str(r["clip"]),
            label=int(r["label"]),
            class_name=name(int(r["label"])),
            apex=int(r["apex"]),
            positions=[float(x) for x in r["keyframe_indices"]],
        )
        for r in rows
    ]
    k = max(len(frames[_key(r)]) for r in rows)
    fig = Figure(figsize=(2.0 + 0.85 * k, 0.5 + 1.05 * len(rows)), dpi=90, layout="constrained")
    fig.suptitle(
        f"key frames of {len(rows)} clips; above each frame its position in the source clip "
        "(red: nearest the apex)",
        fontsize=9,
    )
    axes = fig.subplots(len(rows), k, squeeze=False)
    for row, (r, c) in enumerate(zip(rows, picked, strict=True)):
        clip_frames = frames[_key(r)]
        nearest = int(np.argmin(np.abs(np.asarray(c.positions) - c.apex)))
        for i, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(clip_frames):
                ax.set_axis_off()
                continue
            image = clip_frames[i]
            gray = image.shape[-1] == 1
            ax.imshow(
                image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255
            )
            colour = "red" if i == nearest else "black"
            ax.set_title(f"{c.positions[i]:g}", fontsize=7, color=colour, pad=2)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2 if i == nearest else 0.5)
        axes[row][0].set_ylabel(
            f"{c.name}\n{c.class_name}", rotation=0, ha="right", va="center", fontsize=8
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return KeyframeGrid(uri=uri, clips=picked, png=buf.getvalue())


# ---------------------------------------------------------------- whole inspections


def inspect_keyframes(
    uri: str,
    out: str,
    clips: int = 12,
    *,
    names: list[str] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = emit,
) -> dict:
    """Summarise the key-frame table at `uri` and draw contact sheets of `clips` of its clips
    (spread over the classes, seeded) or of those `names`d; write summary.json, summary.txt
    and sheets/ under `out`. Returns the summary."""

    meta = read_meta(uri)
    if meta["parts"]:
        _, table, _ = read_keyframes(uri, frames=False)
        table = table.sort_values(["dataset", "subject", "clip"]).reset_index(drop=True)
    else:  # every clip rejected: the rejects are what there is to see
        table = pd.DataFrame(columns=["dataset", "subject", "clip", "label", "emotion"])
    settings = meta.get("settings", {})
    summary = summarise_dataset(
        table, read_rejects(uri), classes=class_names(settings.get("data.protocol"))
    )
    # The keyframes.* settings the table was built with (one newer than the table: its default).
    kf = keyframe_settings(
        {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("keyframes.")}
    )
    summary["source"] = {
        "kind": "key-frame table",
        "uri": uri,
        "hash": meta.get("hash"),
        "created": meta.get("created"),
        "settings": {
            k: getattr(kf, k)
            for k in ("k", "size", "method", "motion", "interpolation")
            if f"keyframes.{k}" in settings
        },
    }
    chosen = select_clips(table, names) if names else choose_clips(table, clips, seed)
    picked = [_key(r) for r in table.iloc[chosen].to_dict("records")]
    frames = read_clip_frames(uri, picked, meta) if chosen else {}
    summary["sheets"] = []
    for i in chosen:
        record = table.iloc[i].to_dict()
        record["frames"] = frames[_key(record)]
        try:
            motion, note = clip_motion(record, kf), ""
        except UNUSABLE as e:  # the source moved or broke since the table was built
            motion, note = None, f"no motion curve: {e}"
        path = contact_sheet(record, motion, _sheet_uri(out, record), note=note)
        summary["sheets"].append({"clip": "/".join(_key(record)), "uri": path, "note": note})
        progress(f"[inspect] {len(summary['sheets'])}/{len(chosen)} sheets: {path}")
    _write(summary, out)
    return summary


def inspect_dataset(
    cfg,
    out: str,
    clips: int = 12,
    *,
    names: list[str] | None = None,
    progress: Callable[[str], None] = emit,
) -> dict:
    """Summarise the dataset `cfg` names from its manifest (no key frames needed) and draw
    contact sheets of `clips` clips (spread over the classes, seeded by cfg.seed) or of
    those `names`d, building their key frames with cfg's settings on the fly; write
    summary.json, summary.txt and sheets/ under `out`. Returns the summary."""

    root = layout.data_root(cfg)
    d = cfg.data
    manifest = load_manifest(d.dataset, root, d.annotations, protocol=d.protocol, **d.options)
    summary = summarise_dataset(
        manifest, manifest.attrs.get("rejects", []), classes=class_names(d.protocol)
    )
    kf = keyframe_settings(cfg.keyframes)
    summary["source"] = {
        "kind": "dataset",
        "root": root,
        "dataset": d.dataset,
        "settings": {k: getattr(kf, k) for k in ("k", "size", "method", "motion", "interpolation")},
    }
    rows = manifest_rows(manifest)
    table = pd.DataFrame(rows)
    if names:
        chosen = select_clips(table, names)
    else:
        chosen = choose_clips(table, clips, cfg.seed) if rows else []
    summary["sheets"], summary["failed"] = [], []
    for i in chosen:
        row = rows[i]
        name = "/".join(_key(row))
        try:
            record = build_record(row, kf)
            motion = clip_motion(row, kf)
        except UNUSABLE as e:  # what the key-frame stage would reject: say so, go on
            summary["failed"].append({"clip": name, "reason": f"{type(e).__name__}: {e}"})
            progress(f"[inspect] {name}: {type(e).__name__}: {e}")
            continue
        path = contact_sheet(record, motion, _sheet_uri(out, record), annotated_apex=row["apex"])
        summary["sheets"].append({"clip": name, "uri": path, "note": ""})
        progress(f"[inspect] {len(summary['sheets'])}/{len(chosen)} sheets: {path}")
    _write(summary, out)
    return summary


def _key(record: dict) -> tuple[str, str, str]:
    return str(record["dataset"]), str(record["subject"]), str(record["clip"])


def _sheet_uri(out: str, record: dict) -> str:
    return storage.join(out, "sheets", sheet_name(record))


def _write(summary: dict, out: str) -> None:
    storage.write_json(storage.join(out, "summary.json"), summary)
    storage.write_bytes(storage.join(out, "summary.txt"), (format_summary(summary) + "\n").encode())
