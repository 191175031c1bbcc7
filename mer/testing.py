"""Key-frame tables without video, for tests and benchmarks of the training stages."""

from __future__ import annotations


def write_random_keyframes(
    uri: str,
    *,
    subjects: int = 4,
    clips: int = 6,
    k: int = 8,
    s: int = 32,
    dataset: str = "fake",
    part_size: int = 0,
    per_subject: bool = True,
) -> str:
    """A finished key-frame table (parts and `_meta.json`, as mer.preprocess writes them) of
    random frames whose colour encodes the label (clip i: label i % 3, that channel at 255).

    `clips` per subject (per_subject), or `clips` in all spread round-robin over `subjects`.
    `part_size` clips per Parquet part (0: one part). Seeded: the same arguments give the
    same table.
    """
    import numpy as np

    from mer import storage
    from mer.preprocess import records_to_table

    n = subjects * clips if per_subject else clips
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        label = i % 3
        frames = rng.integers(0, 200, (k, s, s, 3), dtype=np.uint8)
        frames[..., label] = 255
        subject = i // clips if per_subject else i % subjects
        records.append(
            {
                "dataset": dataset,
                "subject": f"s{subject:02d}",
                "clip": f"c{i:04d}",
                "label": label,
                "emotion": "x",
                "onset": 0,
                "apex": k // 2,
                "offset": k - 1,
                "apex_source": "annotated",
                "keyframe_indices": [float(j) for j in range(k)],
                "frames": frames,
                "source": "none",
                "fps": 200.0,
                "face_found": None,
            }
        )
    size = part_size or n
    parts = []
    for start in range(0, n, size):
        part = f"part-{dataset}-{start // size:05d}.parquet"
        storage.write_parquet(
            records_to_table(records[start : start + size]), storage.join(uri, part)
        )
        parts.append(part)
    storage.write_json(storage.join(uri, "_meta.json"), {"hash": dataset, "parts": parts})
    return uri
