"""The key-frame table: the artifact between the key-frame stage and the training stages.

On storage, under a key-frame folder (see mer.layout.keyframes_uri):
  part-<hash>-<chunk>.parquet   one row per clip (DESIGN.md "Key-frame record")
  _rejects.parquet              clips that could not be used: dataset, subject, clip, stage, reason
  _meta.json                    settings hash, counts, the list of parts; written last
A table is finished iff `_meta.json` exists, and only the parts it lists are read, so a
half-written build is never mixed in. In memory a `ClipTable` holds the per-clip columns and
one uint8 array of frames (N, K, S, S, C). Fold specs and fold-run plans (which subjects a
run trains on and predicts, which prior it starts from) are derived from the table here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from mer import storage
from mer.errors import InputError
from mer.folds import FoldRun, FoldSpec, fold_name, inner_folds, loso_folds, subject_groups

REJECT_COLUMNS = ["dataset", "subject", "clip", "stage", "reason"]


# The frames column holds each clip's K x S x S x C uint8 key frames as one fixed-size
# binary value, their shape in the field's metadata. Parquet stores a tensor (list) column
# value by value with its levels: writing a chunk of 8 clips at K=16, S=112 took 0.11 s of
# CPU that way against 0.004 s as binary, a fifth of the key-frame stage's time per clip.
# Tables written before (a fixed-shape tensor column) are read as well (frames_array).
FRAMES_SHAPE = b"mer.frames_shape"


def records_to_table(records: list[dict]) -> pa.Table:
    """Key-frame records -> Arrow table; `frames` is one binary value per clip (its frames,
    C order), the shape in the field metadata (read them with frames_array)."""
    frames = np.ascontiguousarray(np.stack([r["frames"] for r in records]), dtype=np.uint8)
    cols = {k: [r[k] for r in records] for k in records[0] if k != "frames"}
    table = pa.table(
        {
            "dataset": pa.array(cols["dataset"], pa.string()),
            "subject": pa.array(cols["subject"], pa.string()),
            "clip": pa.array(cols["clip"], pa.string()),
            "label": pa.array(cols["label"], pa.int64()),
            "emotion": pa.array(cols["emotion"], pa.string()),
            "onset": pa.array(cols["onset"], pa.int64()),
            "apex": pa.array(cols["apex"], pa.int64()),
            "offset": pa.array(cols["offset"], pa.int64()),
            "apex_source": pa.array(cols["apex_source"], pa.string()),
            "keyframe_indices": pa.array(cols["keyframe_indices"], pa.list_(pa.float64())),
            "frames": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(frames[0].nbytes), len(frames), [None, pa.py_buffer(frames)]
            ),
            "source": pa.array(cols["source"], pa.string()),
            "fps": pa.array(cols["fps"], pa.float64()),
            "face_found": pa.array(cols["face_found"], pa.bool_()),
        }
    )
    i = table.schema.get_field_index("frames")
    shape = ",".join(map(str, frames.shape[1:])).encode()
    field = table.schema.field(i).with_metadata({FRAMES_SHAPE: shape})
    return table.set_column(i, field, table.column(i))


def frames_array(table: pa.Table, column: str = "frames") -> np.ndarray:
    """The key frames of a table read from a part, (N, K, S, S, C) uint8: a binary column
    with its shape in the field metadata, or (tables written before) a tensor column."""
    values = table.column(column).combine_chunks()
    if isinstance(values.type, pa.FixedShapeTensorType):
        return values.to_numpy_ndarray()
    shape = tuple(int(x) for x in table.schema.field(column).metadata[FRAMES_SHAPE].split(b","))
    width = values.type.byte_width
    data = np.frombuffer(values.buffers()[1], np.uint8)
    data = data[values.offset * width : (values.offset + len(values)) * width]
    return data.reshape(len(values), *shape)


def rejects_to_table(rejects: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{c: str(r.get(c, "")) for c in REJECT_COLUMNS} for r in rejects],
        schema=pa.schema([(c, pa.string()) for c in REJECT_COLUMNS]),
    )


def read_meta(uri: str) -> dict:
    meta_uri = storage.join(uri, "_meta.json")
    if not storage.exists(meta_uri):
        raise InputError(
            f"{uri}: no finished key-frame table (_meta.json missing); run jobs/preprocess.py "
            "with the same config first"
        )
    return storage.read_json(meta_uri)


def read_keyframes(uri: str, *, frames: bool = True) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """Read a finished key-frame table: (meta, per-clip DataFrame, frames N,K,S,S,C uint8)."""
    meta = read_meta(uri)
    if not meta["parts"]:
        raise InputError(f"{uri}: the key-frame table holds no clips (all rejected?)")
    columns = None if frames else [c for c in _columns(uri, meta) if c != "frames"]
    tables = [storage.read_parquet(storage.join(uri, p), columns=columns) for p in meta["parts"]]
    table = pa.concat_tables(tables)
    arr = frames_array(table) if frames else None
    df = table.drop_columns(["frames"]).to_pandas() if frames else table.to_pandas()
    return meta, df, arr


def read_clip_frames(
    uri: str, keys: list[tuple[str, str, str]], meta: dict | None = None
) -> dict[tuple[str, str, str], np.ndarray]:
    """Key frames (K,S,S,C uint8) of the clips `keys` ((dataset, subject, clip)) of the finished
    table at `uri`, read part by part with a filter on the clip names, so a large table is
    never loaded whole. Keys not in the table are absent from the result."""
    meta = meta or read_meta(uri)
    wanted = set(keys)
    found: dict = {}
    clip_names = sorted({c for _, _, c in wanted})
    for part in meta["parts"]:
        t = storage.read_parquet(
            storage.join(uri, part),
            columns=["dataset", "subject", "clip", "frames"],
            filters=[("clip", "in", clip_names)],
        )
        if not t.num_rows:
            continue
        frames = frames_array(t)
        names = zip(*(t.column(c).to_pylist() for c in ("dataset", "subject", "clip")), strict=True)
        for key, f in zip(names, frames, strict=True):
            if key in wanted:
                found[key] = f
    return found


def read_rejects(uri: str) -> pd.DataFrame:
    path = storage.join(uri, "_rejects.parquet")
    if not storage.exists(path):
        return pd.DataFrame(columns=REJECT_COLUMNS)
    return storage.read_parquet(path).to_pandas()


def _columns(uri: str, meta: dict) -> list[str]:
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(storage.join(uri, meta["parts"][0]))
    with fs.open(path, "rb") as f:
        return pq.read_schema(f).names


@dataclass
class ClipTable:
    meta: dict
    clips: pd.DataFrame  # one row per clip: dataset, subject, clip, label, ...
    frames: np.ndarray  # N, K, S, S, C uint8

    @property
    def subject_keys(self) -> np.ndarray:
        return (self.clips["dataset"] + "/" + self.clips["subject"]).to_numpy()

    def indices_of(self, subjects) -> np.ndarray:
        """Row indices of the clips whose "dataset/subject" key is in `subjects`."""
        return np.flatnonzero(np.isin(self.subject_keys, list(subjects)))


@functools.lru_cache(maxsize=2)
def load_table(uri: str) -> ClipTable:
    """The key-frame table at `uri`, read once per process."""
    meta, clips, frames = read_keyframes(uri)
    return ClipTable(meta=meta, clips=clips.reset_index(drop=True), frames=frames)


# ---------------------------------------------------------------- folds and fold runs


def fold_specs(table: ClipTable) -> list[FoldSpec]:
    """LOSO folds of the key-frame table, by subject keys (picklable, stable order)."""
    keys = table.subject_keys
    return [
        FoldSpec(
            index=i,
            key=f.test_key,
            name=fold_name(f.test_key),
            train_subjects=sorted(set(keys[f.train_idx])),
            test_subjects=sorted(set(keys[f.test_idx])),
        )
        for i, f in enumerate(loso_folds(table.clips))
    ]


def select_folds(table: ClipTable, keys: list[str] | None = None) -> list[FoldSpec]:
    """All LOSO folds, or those whose held-out key ("dataset/subject") is in `keys`."""
    folds = fold_specs(table)
    if keys:
        known = {f.key for f in folds}
        missing = sorted(set(keys) - known)
        if missing:
            raise InputError(f"unknown fold(s) {missing}; known: {sorted(known)}")
        folds = [f for f in folds if f.key in set(keys)]
    return folds


# Shared priors' per-epoch generators are seeded apart from every fold run's (mer.train.data).
SHARED_PRIOR_INDEX = 1_000_000


def clip_counts(table: ClipTable) -> dict[str, int]:
    """Clips per "dataset/subject" key of the table."""
    keys, counts = np.unique(table.subject_keys, return_counts=True)
    return {str(k): int(c) for k, c in zip(keys, counts, strict=True)}


def prior_groups_of(table: ClipTable, n: int | None) -> list[tuple[str, ...]] | None:
    """The subject groups of `pretrain.prior_groups: n` over every subject of the table (None:
    one prior per fold run). Groups depend on the table alone, not on which folds run."""
    return None if n is None else subject_groups(clip_counts(table), n)


def _subjects_tag(subjects) -> str:
    return hashlib.sha256("\n".join(sorted(subjects)).encode()).hexdigest()[:8]


def _share_prior(run: FoldRun, groups, prefix: str, index: int) -> FoldRun:
    """`run` with the shared prior of the group holding its held-out subjects: learnt on every
    subject of `groups` outside that group (its id names the group and hashes its subjects)."""
    held = set(run.test_subjects)
    (g,) = [i for i, group in enumerate(groups) if held <= set(group)]
    train = sorted(set().union(*groups) - set(groups[g]))
    return dataclasses.replace(
        run,
        prior=f"{prefix}shared{g}of{len(groups)}-{_subjects_tag(train)}",
        prior_subjects=train,
        prior_index=index + g,
    )


def outer_runs(folds: list[FoldSpec], groups: list[tuple[str, ...]] | None = None) -> list[FoldRun]:
    """One fold run per LOSO fold. Its prior is the one learnt on the same training subjects,
    or, with subject `groups` (prior_groups_of), the prior learnt on every subject outside
    the group that holds the held-out subject (`prior_subjects`), shared by that group's
    folds."""
    runs = [
        FoldRun(
            id=f.name,
            index=f.index,
            kind="outer",
            outer=f.name,
            train_subjects=f.train_subjects,
            test_subjects=f.test_subjects,
            prior=f.name,
        )
        for f in folds
    ]
    if groups:
        runs = [_share_prior(run, groups, "", SHARED_PRIOR_INDEX) for run in runs]
    return runs


def _share_inner_priors(
    outer: FoldRun, inner_runs: list[FoldRun], inner_prior: str, n: int, counts: dict[str, int]
) -> list[FoldRun]:
    """Shared priors of one outer fold's inner runs (nested_runs)."""
    if inner_prior != "own":  # the outer run's (shared) prior, labelled as such
        return [
            dataclasses.replace(
                run,
                prior=outer.prior,
                prior_subjects=outer.prior_subjects,
                prior_index=outer.prior_index,
            )
            for run in inner_runs
        ]
    units = {f"{i:04d}": sum(counts[s] for s in r.test_subjects) for i, r in enumerate(inner_runs)}
    groups = [
        tuple(s for u in group for s in inner_runs[int(u)].test_subjects)
        for group in subject_groups(units, min(n, len(inner_runs)))
    ]
    index = SHARED_PRIOR_INDEX + 1000 * (outer.index + 1)
    return [_share_prior(run, groups, f"{outer.id}~", index) for run in inner_runs]


def nested_runs(
    table: ClipTable,
    folds: list[FoldSpec],
    inner_k: int,
    seed: int,
    inner_prior: str = "own",
    prior_groups: int | None = None,
) -> list[FoldRun]:
    """Outer runs, each followed by its inner runs: `inner_k` groups of the outer training
    subjects, each group validated once. An inner run's prior is learnt on the inner
    training subjects ("own"; its id carries a hash of them), or is the outer run's
    ("outer": the prior then saw the inner validation subjects' labels).

    With `prior_groups` N, outer runs share N priors (outer_runs) and the same rule holds
    inside each outer training set: its inner validation groups are dealt into min(N, k)
    groups balanced by clips (whole validation groups, so every inner run's held-out
    subjects lie in one), and an inner run starts from the prior learnt on the outer
    training subjects outside its group, which never holds the outer test subject either."""
    keys = table.subject_keys
    counts = clip_counts(table)
    runs = []
    for outer in outer_runs(folds, prior_groups_of(table, prior_groups)):
        runs.append(outer)
        train_idx = table.indices_of(outer.train_subjects)
        k = min(inner_k, len(outer.train_subjects))
        inner_runs = []
        for g, inner in enumerate(inner_folds(table.clips, train_idx, k, seed=seed)):
            train = sorted(set(keys[inner.train_idx]))
            run_id = f"{outer.id}~inner{g}-{_subjects_tag(train)}"
            inner_runs.append(
                FoldRun(
                    id=run_id,
                    index=1000 * (outer.index + 1) + g,
                    kind="inner",
                    outer=outer.id,
                    train_subjects=train,
                    test_subjects=sorted(set(keys[inner.val_idx])),
                    prior=run_id if inner_prior == "own" else outer.id,
                )
            )
        if prior_groups is not None:
            inner_runs = _share_inner_priors(outer, inner_runs, inner_prior, prior_groups, counts)
        runs.extend(inner_runs)
    return runs
