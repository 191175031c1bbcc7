"""MEGC2019 composite manifest against the official list, on a tree holding every listed clip.

The list (../shared/data/megc2019/combined_3class_gt.csv) is licensed with the challenge and
not in the repository; these tests skip when it is absent.
"""

from __future__ import annotations

import csv
import logging
import shutil

import pytest
from conftest import MEGC2019_LIST
from test_datasets_adapters import (
    BMP,
    GRAY_JPEG,
    JPEG,
    SAMM_HEADER,
    SAMM_PREAMBLE,
    write_frames,
    write_xlsx,
)

from mer.datasets import MANIFEST_COLUMNS, casme2, load_manifest, samm
from mer.errors import InputError

pytestmark = pytest.mark.skipif(
    not MEGC2019_LIST.exists(), reason=f"MEGC2019 list {MEGC2019_LIST} is absent"
)

CASME2_EMOTIONS = {0: ("disgust", "repression"), 1: ("happiness",), 2: ("surprise",)}
SAMM_EMOTIONS = {0: ("Anger", "Contempt", "Fear"), 1: ("Happiness",), 2: ("Surprise",)}
SMIC_CLASSES = {"ne": "negative", "po": "positive", "sur": "surprise"}


def read_list() -> list[tuple[str, str, str, int]]:
    with open(MEGC2019_LIST, newline="") as f:
        return [(d, s, c, int(label)) for d, s, c, label in csv.reader(f)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/CASME2, root/SAMM, root/SMIC holding every listed clip (1-3 frames each)."""
    root = tmp_path_factory.mktemp("megc2019")
    casme2_rows, samm_rows = [], []
    for i, (dataset, subject, clip, label) in enumerate(read_list()):
        n = 1 + i % 3
        if dataset == "casme2":
            folder = root / "CASME2" / "CASME2_RAW_selected" / subject / clip
            write_frames(folder, [f"img{k}.jpg" for k in range(1, n + 1)], JPEG)
            emotion = CASME2_EMOTIONS[label][i % len(CASME2_EMOTIONS[label])]
            apex = "/" if i % 5 == 0 else 1
            casme2_rows.append([int(subject[3:]), clip, i, 1, apex, n, None, "AU", emotion])
        elif dataset == "samm":
            folder = root / "SAMM" / "SAMM" / f"{int(subject):03d}" / clip
            write_frames(folder, [f"{int(subject):03d}_{k:05d}.jpg" for k in range(100, 100 + n)])
            emotion = SAMM_EMOTIONS[label][i % len(SAMM_EMOTIONS[label])]
            samm_rows.append([int(subject), clip, 1, 100, 100, 99 + n, n, "Micro", "", emotion])
        else:
            # Odd subjects spelled without zero padding on disk (s1/s1_ne_01), as some copies are.
            number, code, index = clip[1:].split("_")
            if int(number) % 2:
                subject, clip = f"s{int(number)}", f"s{int(number)}_{code}_{index}"
            folder = root / "SMIC" / "HS" / subject / "micro" / SMIC_CLASSES[code] / clip
            write_frames(folder, [f"image{k:07d}.bmp" for k in range(500, 500 + n)], BMP)
    # Clips that are in the datasets but not in the list: must not appear.
    write_frames(root / "CASME2" / "CASME2_RAW_selected" / "sub01" / "EP99_01", ["img1.jpg"])
    casme2_rows.append([1, "EP99_01", 999, 1, 1, 1, None, "AU", "fear"])
    write_frames(root / "SAMM" / "SAMM" / "006" / "006_9_9", ["006_00001.jpg"], GRAY_JPEG)
    samm_rows.append([6, "006_9_9", 1, 1, 1, 1, 1, "Micro", "", "Other"])
    write_frames(root / "SMIC" / "HS" / "s04" / "micro" / "positive" / "s04_po_99", ["image1.bmp"])
    write_xlsx(root / "CASME2" / casme2.SHEET, casme2.HEADER, casme2_rows)
    write_xlsx(root / "SAMM" / samm.SHEET, SAMM_HEADER[:10], samm_rows, preamble=SAMM_PREAMBLE)
    return root


def test_composite_matches_the_official_list(tree):
    m = load_manifest("megc2019", str(tree), annotations=str(MEGC2019_LIST))
    assert list(m.columns) == MANIFEST_COLUMNS
    assert len(m) == 442 and m.attrs["rejects"] == []
    assert m[["dataset", "subject"]].drop_duplicates().shape[0] == 68
    assert m["subject"].nunique() == 68
    assert m["label"].value_counts().to_dict() == {0: 250, 1: 109, 2: 83}
    assert m["dataset"].value_counts().to_dict() == {"smic": 164, "casme2": 145, "samm": 133}
    canonical = {"casme2": str, "samm": lambda s: f"{int(s):03d}", "smic": str}
    expected = {(d, canonical[d](s), c): label for d, s, c, label in read_list()}
    got = dict(
        zip(zip(m["dataset"], m["subject"], m["clip"], strict=True), m["label"], strict=True)
    )
    assert got == expected
    by_clip = m.set_index("clip")
    assert by_clip.loc["006_1_2", "emotion"] in ("anger", "contempt", "fear")
    assert by_clip.loc["s01_ne_01", "emotion"] == "negative"
    assert by_clip.loc["s01_ne_01", "source"].endswith("SMIC/HS/s1/micro/negative/s1_ne_01")
    assert by_clip.loc["s01_ne_01", "onset"] == 500
    assert set(m.groupby("dataset")["fps"].first().items()) == {
        ("casme2", 200),
        ("samm", 200),
        ("smic", 100),
    }
    assert m["apex"].isna().sum() > 0  # CASME II '/' apexes and every SMIC clip
    assert list(m["dataset"]) == sorted(m["dataset"])


def test_listed_clip_missing_on_disk_is_rejected(tree):
    folder = tree / "SAMM" / "SAMM" / "006" / "006_1_2"
    moved = tree / "moved"
    shutil.move(folder, moved)
    try:
        m = load_manifest("megc2019", str(tree), list_path=str(MEGC2019_LIST))
    finally:
        shutil.move(moved, folder)
    assert len(m) == 441 and "006_1_2" not in set(m["clip"])
    [only] = m.attrs["rejects"]
    assert (only["dataset"], only["subject"], only["clip"]) == ("samm", "006", "006_1_2")
    assert "does not exist" in only["reason"]


def test_short_list_labels_win_and_disagreements_are_logged(tree, tmp_path, caplog):
    path = tmp_path / "list.csv"
    path.write_text(
        "smic,s1,s1_po_01,1\nsamm,6,006_1_2,2\ncasme2,sub01,EP02_01f,1\nsmic,s02,s02_po_99,1\n"
    )
    with caplog.at_level(logging.WARNING):
        m = load_manifest("megc2019", str(tree), annotations=str(path))
    assert list(m["clip"]) == ["EP02_01f", "006_1_2", "s01_po_01"]
    assert list(m["label"]) == [1, 2, 1]
    assert "1 samm clips have a list label that disagrees" in caplog.text
    [only] = m.attrs["rejects"]
    assert only["clip"] == "s02_po_99" and f"{path} line 4" in only["reason"]


def test_bad_lists_and_roots(tree, tmp_path):
    with pytest.raises(InputError, match="MEGC2019 list .*combined_3class_gt.csv not found"):
        load_manifest("megc2019", str(tree))
    bad = tmp_path / "bad.csv"
    bad.write_text("casme2,sub01,EP02_01f,1\ncasme2,sub01,EP02_01f,3\n")
    with pytest.raises(InputError, match=r"bad\.csv line 2: expected 'dataset,subject,clip,label'"):
        load_manifest("megc2019", str(tree), annotations=str(bad))
    bad.write_text("samm,6,006_1_2,0\nsamm,006,006_1_2,0\n")
    with pytest.raises(InputError, match=r"samm 006/006_1_2 is listed twice: .*line 1 and line 2"):
        load_manifest("megc2019", str(tree), annotations=str(bad))
    empty_smic = tmp_path / "smic"
    (empty_smic / "HS").mkdir(parents=True)
    with pytest.raises(InputError, match=f"none of the 164 smic clips .* is under {empty_smic}"):
        load_manifest(
            "megc2019", str(tree), annotations=str(MEGC2019_LIST), smic_root=str(empty_smic)
        )
    with pytest.raises(InputError, match=f"SAMM root {tmp_path / 'absent'} does not exist"):
        load_manifest(
            "megc2019",
            str(tree),
            annotations=str(MEGC2019_LIST),
            samm_root=str(tmp_path / "absent"),
        )
