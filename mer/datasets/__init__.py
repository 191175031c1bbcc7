"""Dataset adapters: each turns a dataset root (local path or s3:// URI) into a clip manifest.

A manifest is a pandas DataFrame, one row per clip, with MANIFEST_COLUMNS:
  dataset, subject, clip   canonical names (see each adapter; MEGC2019 spellings)
  label (int), emotion     class index under the protocol, and the dataset's own emotion word
  onset, apex, offset      the dataset's own frame numbers (apex is <NA> where unannotated)
  source                   URI of the clip's frame folder or video file
  fps                      the dataset's frame rate
Clips that cannot be used are not silently dropped: they are listed in
`manifest.attrs["rejects"]` (dicts with dataset, subject, clip, stage, reason) and logged.
"""

from __future__ import annotations

import pandas as pd

from mer.errors import InputError

MANIFEST_COLUMNS = [
    "dataset",
    "subject",
    "clip",
    "label",
    "emotion",
    "onset",
    "apex",
    "offset",
    "source",
    "fps",
]

# MEGC2019 composite classes (the class list used by every 3-class protocol here).
CLASSES_3 = ("negative", "positive", "surprise")

DATASETS = ("casme2", "samm", "smic", "casme3", "megc2019", "synthetic")


def class_names(protocol: str | None, dataset: str = "") -> list[str] | None:
    """Names of the class indices under `protocol`: the MEGC2019 classes for 3class, the
    dataset's own emotion words for 5class (CASME II, SAMM); None where only the indices
    are known."""
    if protocol == "3class":
        return list(CLASSES_3)
    if protocol != "5class" or dataset not in ("casme2", "samm"):
        return None
    if dataset == "casme2":  # (the adapters import this package: see load_manifest)
        from mer.datasets.casme2 import FIVE_CLASS as five
    else:
        from mer.datasets.samm import FIVE_CLASS as five
    return [w for w, _ in sorted(five.items(), key=lambda kv: kv[1])]


def load_manifest(dataset: str, root: str, annotations: str | None = None, **kw) -> pd.DataFrame:
    """Load the clip manifest of `dataset` found under `root` (local path or s3:// URI)."""
    # The adapters are imported here, not at the top: each imports this package (CLASSES_3,
    # the manifest columns), which the config checks read long before any dataset is loaded.
    if dataset == "casme2":
        from mer.datasets.casme2 import load
    elif dataset == "samm":
        from mer.datasets.samm import load
    elif dataset == "smic":
        from mer.datasets.smic import load
    elif dataset == "casme3":
        from mer.datasets.casme3 import load
    elif dataset == "megc2019":
        from mer.datasets.megc2019 import load
    elif dataset == "synthetic":
        from mer.datasets.synthetic.generator import load
    else:
        raise InputError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return load(root, annotations=annotations, **kw)


def load_long_videos(dataset: str, root: str, annotations: str | None = None):
    """The long videos (mer.datasets.long_videos.LongVideoSet) of `dataset` ("casme_sq",
    "samm_lv" or "synthetic_long") under `root` (local path or s3:// URI); `annotations`
    overrides the sheet's default location. Adapters imported here, as in load_manifest."""
    from mer.datasets.long_videos import LONG_DATASETS
    from mer.errors import InputError

    if dataset == "casme_sq":
        from mer.datasets.casme_sq import load_long
    elif dataset == "samm_lv":
        from mer.datasets.samm_lv import load_long
    elif dataset == "synthetic_long":
        from mer.datasets.synthetic.long_videos import load_long

        return load_long(root)
    else:
        raise InputError(
            f"unknown long-video dataset {dataset!r}; expected one of {', '.join(LONG_DATASETS)}"
        )
    return load_long(root, annotations=annotations)
