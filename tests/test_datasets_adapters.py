"""Dataset adapters on tiny trees written here in each dataset's real layout.

The helpers at the top (frame bytes, sheet writers, tree builders) are reused by
test_datasets_megc2019.py and test_datasets_s3.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pandas as pd
import pytest

from mer.datasets import MANIFEST_COLUMNS, casme2, casme3, common, load_manifest, samm, smic
from mer.errors import ConfigError, InputError

JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 120, np.uint8))[1].tobytes()
GRAY_JPEG = cv2.imencode(".jpg", np.full((8, 8), 120, np.uint8))[1].tobytes()
BMP = cv2.imencode(".bmp", np.full((8, 8, 3), 120, np.uint8))[1].tobytes()

SAMM_HEADER = [
    "Subject",
    "Filename",
    "Inducement Code",
    "Onset Frame",
    "Apex Frame",
    "Offset Frame",
    "Duration",
    "Type",
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
]
SAMM_PREAMBLE = 12  # the real sheet's header is on row 13


def write_frames(folder: Path, names, data: bytes = JPEG) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(data)


def write_xlsx(path: Path, header: list, rows: list[list], preamble: int = 0) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    for i in range(preamble):  # a title, notes and blank rows, as above SAMM's header
        sheet.append([f"note {i}"] if i % 3 == 0 else [])
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def casme2_tree(root: Path, clips: list[tuple], cropped: bool = False) -> Path:
    """clips: (subject int, clip, onset, apex, offset, emotion[, frame numbers on disk]).

    Sheet rows are in the given order: clip i is on spreadsheet row i + 2.
    """
    base, prefix = ("Cropped", "reg_img") if cropped else ("CASME2_RAW_selected", "img")
    rows = []
    for i, (subject, clip, onset, apex, offset, emotion, *frames) in enumerate(clips):
        numbers = frames[0] if frames else range(onset, offset + 1)
        folder = root / base / f"sub{subject:02d}" / clip
        write_frames(folder, [f"{prefix}{n}.jpg" for n in numbers])
        rows.append([subject, clip, i, onset, apex, offset, None, "AU12", emotion])
    write_xlsx(root / casme2.SHEET, casme2.HEADER, rows)
    return root


def samm_tree(root: Path, clips: list[tuple], preamble: int = SAMM_PREAMBLE) -> Path:
    """clips: (subject int, clip, onset, apex, offset, emotion); grayscale 5-digit frames."""
    rows = []
    for subject, clip, onset, apex, offset, emotion in clips:
        folder = root / "SAMM" / f"{subject:03d}" / clip
        names = [f"{subject:03d}_{n:05d}.jpg" for n in range(onset, offset + 1)]
        write_frames(folder, names, GRAY_JPEG)
        rows.append(
            [subject, clip, "1", onset, apex, offset, offset - onset, "Micro", "R12", emotion, "I"]
        )
    write_xlsx(root / samm.SHEET, SAMM_HEADER, rows, preamble=preamble)
    return root


def smic_tree(root: Path, clips: list[tuple]) -> Path:
    """clips: (subject folder, class folder, clip folder, frame numbers); BMP frames."""
    for subject, cls, clip, numbers in clips:
        folder = root / "HS" / subject / "micro" / cls / clip
        write_frames(folder, [f"image{n:07d}.bmp" for n in numbers], BMP)
    return root


CASME2_CLIPS = [
    (1, "EP02_01f", 46, 59, 86, "happiness"),
    (1, "EP19_05f", 10, "/", 20, "disgust"),  # apex missing in the sheet
    (2, "EP01_11f", 5, 7, 9, "others"),  # outside the 3-class protocol
    (2, "EP03_02", 30, 31, 33, "surprise"),
    (11, "EP15_04f", 1, 2, 3, "fear"),  # outside the 5-class protocol
]


@pytest.fixture()
def casme2_root(tmp_path):
    return casme2_tree(tmp_path / "casme2", CASME2_CLIPS)


def rejected(manifest) -> dict[str, str]:
    return {f"{r['subject']}/{r['clip']}": r["reason"] for r in manifest.attrs["rejects"]}


# CASME II


def test_casme2_manifest_in_raw_layout(casme2_root):
    m = load_manifest("casme2", str(casme2_root))
    assert list(m.columns) == MANIFEST_COLUMNS
    assert list(zip(m.subject, m["clip"], strict=True)) == [
        ("sub01", "EP02_01f"),
        ("sub01", "EP19_05f"),
        ("sub02", "EP03_02"),
        ("sub11", "EP15_04f"),
    ]
    assert list(m.label) == [1, 0, 2, 0]
    assert list(m.emotion) == ["happiness", "disgust", "surprise", "fear"]
    assert m.apex.dtype == "Int64" and m.apex.isna().tolist() == [False, True, False, False]
    assert (m.onset[0], m.apex[0], m.offset[0], m.fps[0]) == (46, 59, 86, 200)
    expected = casme2_root.resolve() / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    assert m.source[0] == str(expected)
    assert rejected(m) == {"sub02/EP01_11f": "emotion 'others' is outside the 3class protocol"}
    assert m.attrs["rejects"][0]["stage"] == "manifest"
    assert m.attrs["rejects"][0]["dataset"] == "casme2"


def test_casme2_cropped_layout_is_found_or_picked(tmp_path):
    root = casme2_tree(tmp_path, CASME2_CLIPS[:2], cropped=True)
    auto = casme2.load(str(root))
    assert auto.source[0].endswith("Cropped/sub01/EP02_01f")
    assert len(auto) == 2 and list(auto.apex.isna()) == [False, True]
    with pytest.raises(InputError, match="no CASME2_RAW_selected folder"):
        casme2.load(str(root), frames="raw")
    with pytest.raises(ConfigError, match="frames="):
        casme2.load(str(root), frames="aligned")


def test_casme2_five_class_protocol(casme2_root):
    m = casme2.load(str(casme2_root), protocol="5class")
    assert dict(zip(m["clip"], m.label, strict=True)) == {
        "EP02_01f": 0,
        "EP19_05f": 1,
        "EP01_11f": 4,
        "EP03_02": 3,
    }
    assert rejected(m) == {"sub11/EP15_04f": "emotion 'fear' is outside the 5class protocol"}
    with pytest.raises(ConfigError, match="protocol '7class'"):
        casme2.load(str(casme2_root), protocol="7class")


def test_casme2_sheet_from_csv_elsewhere(casme2_root, tmp_path):
    csv = tmp_path / "coding.csv"
    csv.write_text(
        "Subject,Filename,,OnsetFrame,ApexFrame,OffsetFrame,,Action Units,Estimated Emotion\n"
        "1,EP02_01f,0,46,59,86,,AU12,Happy\n"
    )
    m = casme2.load(str(casme2_root), annotations=str(csv))
    assert list(m["clip"]) == ["EP02_01f"] and list(m.emotion) == ["happiness"]


def test_casme2_clip_problems_are_rejected(tmp_path, caplog):
    clips = [
        (1, "EP02_01f", 46, 59, 86, "happiness"),  # fine
        (1, "EP03_01", 20, 21, 10, "disgust"),  # onset after offset
        (1, "EP04_01", 1, 2, 9, "disgust", range(1, 6)),  # offset beyond the frames
        (2, "EP05_01", 1, 40, 5, "disgust"),  # apex outside onset..offset: kept, apex <NA>
        (2, "EP06_01", 1, 2, 3, "disgust", []),  # empty folder
        (2, "EP07_01", 1, 2, 3, "disgust"),  # folder deleted below
    ]
    root = casme2_tree(tmp_path, clips)
    (root / "CASME2_RAW_selected" / "sub02" / "EP07_01" / "img1.jpg").unlink()
    for name in ("img2.jpg", "img3.jpg"):
        (root / "CASME2_RAW_selected" / "sub02" / "EP07_01" / name).unlink()
    (root / "CASME2_RAW_selected" / "sub02" / "EP07_01").rmdir()
    with caplog.at_level(logging.WARNING):
        m = casme2.load(str(root))
    assert list(m["clip"]) == ["EP02_01f", "EP05_01"]
    assert m.apex.isna().tolist() == [False, True]
    reasons = rejected(m)
    assert set(reasons) == {"sub01/EP03_01", "sub01/EP04_01", "sub02/EP06_01", "sub02/EP07_01"}
    assert "onset frame 20 is after offset frame 10" in reasons["sub01/EP03_01"]
    assert "1..9" in reasons["sub01/EP04_01"] and "frames 1..5" in reasons["sub01/EP04_01"]
    assert "holds no image frames" in reasons["sub02/EP06_01"]
    assert "sub02/EP07_01 does not exist" in reasons["sub02/EP07_01"]
    assert "EP07_01 skipped" in caplog.text and "apex frame 40 is outside" in caplog.text


def test_casme2_missing_onset_cell_is_rejected_with_its_row(tmp_path):
    root = casme2_tree(tmp_path, CASME2_CLIPS[:2])
    book = openpyxl.load_workbook(root / casme2.SHEET)
    book.active["D3"] = "/"  # OnsetFrame of EP19_05f, spreadsheet row 3
    book.save(root / casme2.SHEET)
    m = casme2.load(str(root))
    assert rejected(m) == {
        "sub01/EP19_05f": f"{root.resolve() / casme2.SHEET} row 3 has no OnsetFrame"
    }


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.delete_cols(5), r"CASME2-coding-20140508\.xlsx.*no 'ApexFrame' column"),
        (lambda s: s.append([1, "EP02_01f", 9, 1, 2, 3, None, "", "disgust"]), r"rows? 2.*row 7"),
        (lambda s: s.__setitem__("I4", "happpy"), r"xlsx row 4: unknown emotion 'happpy'"),
        (lambda s: s.__setitem__("E2", "4x"), r"xlsx row 2: ApexFrame '4x' is not a frame number"),
        (lambda s: s.__setitem__("B3", "../../etc"), r"xlsx row 3: Filename '\.\./\.\./etc'"),
        (lambda s: s.__setitem__("B3", "/etc/passwd"), r"xlsx row 3: Filename '/etc/passwd'"),
        (lambda s: s.__setitem__("A5", "sub"), r"xlsx row 5: subject 'sub'"),
    ],
    ids=[
        "missing-column",
        "duplicate",
        "unknown-emotion",
        "bad-frame",
        "dotdot",
        "absolute",
        "subject",
    ],
)
def test_casme2_bad_sheets_raise_naming_file_and_row(casme2_root, edit, message):
    path = casme2_root / casme2.SHEET
    book = openpyxl.load_workbook(path)
    edit(book.active)
    book.save(path)
    with pytest.raises(InputError, match=message):
        casme2.load(str(casme2_root))


def test_casme2_missing_root_sheet_or_frames(casme2_root, tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'absent'} does not exist"):
        casme2.load(str(tmp_path / "absent"))
    with pytest.raises(InputError, match=r"annotation sheet .*nope\.xlsx not found"):
        casme2.load(str(casme2_root), annotations=str(tmp_path / "nope.xlsx"))
    not_xlsx = tmp_path / "sheet.xlsx"
    not_xlsx.write_text("hello")
    with pytest.raises(InputError, match=r"sheet\.xlsx: not a readable \.xlsx"):
        casme2.load(str(casme2_root), annotations=str(not_xlsx))
    # Right sheet, but the frames are somewhere else: an error, not an all-rejects manifest.
    empty = tmp_path / "other"
    (empty / "CASME2_RAW_selected").mkdir(parents=True)
    with pytest.raises(InputError, match="none of the 4 casme2 clip folders exists"):
        casme2.load(str(empty), annotations=str(casme2_root / casme2.SHEET))


# SAMM


SAMM_CLIPS = [
    (6, "006_1_2", 5562, 5588, 5600, "Contempt"),
    (6, "006_1_3", 100, -1, 110, "Other"),  # apex -1: unannotated
    (7, "007_5_1", 20, 22, 24, "Happiness"),
    (11, "011_2_1", 3, 4, 5, "Disgust"),
]


def test_samm_manifest_with_header_on_row_13(tmp_path):
    root = samm_tree(tmp_path, SAMM_CLIPS)
    m = load_manifest("samm", str(root))
    assert list(m.columns) == MANIFEST_COLUMNS
    assert list(m.subject) == ["006", "007", "011"]
    assert list(m["clip"]) == ["006_1_2", "007_5_1", "011_2_1"]
    assert list(m.label) == [0, 1, 0] and list(m.emotion) == ["contempt", "happiness", "disgust"]
    assert (m.onset[0], m.apex[0], m.offset[0], m.fps[0]) == (5562, 5588, 5600, 200)
    assert m.source[0].endswith("SAMM/006/006_1_2")
    assert rejected(m) == {"006/006_1_3": "emotion 'others' is outside the 3class protocol"}

    five = samm.load(str(root), protocol="5class")
    assert dict(zip(five["clip"], five.label, strict=True)) == {
        "006_1_2": 1,
        "006_1_3": 4,
        "007_5_1": 2,
    }
    assert five.apex.isna().tolist() == [False, True, False]
    assert "'disgust' is outside the 5class" in rejected(five)["011/011_2_1"]


def test_samm_header_row_is_searched_not_assumed(tmp_path):
    root = samm_tree(tmp_path, SAMM_CLIPS[:1], preamble=3)
    assert list(samm.load(str(root))["clip"]) == ["006_1_2"]


def test_samm_duplicate_rows_name_spreadsheet_rows(tmp_path):
    root = samm_tree(tmp_path, SAMM_CLIPS[:2] + [SAMM_CLIPS[0]])
    with pytest.raises(InputError, match=r"006/006_1_2 appears twice: .*row 14 and .*row 16"):
        samm.load(str(root))


def test_samm_sheet_without_header_row(tmp_path):
    root = samm_tree(tmp_path, SAMM_CLIPS[:1])
    write_xlsx(root / samm.SHEET, ["a", "b"], [[1, 2]])
    with pytest.raises(InputError, match=r"SAMM_Micro_FACS_Codes_v2\.xlsx: no header row"):
        samm.load(str(root))


# SMIC-HS


def test_smic_manifest_from_class_folders(tmp_path):
    root = smic_tree(
        tmp_path,
        [
            ("s1", "negative", "s1_ne_01", range(1001, 1004)),  # unpadded spellings
            ("s1", "surprise", "s1_sur_02", [7, 9, 8]),
            ("s02", "positive", "s02_po_01", [123456, 123457]),
            ("s02", "negative", "s02_ne_03", []),  # empty: rejected
        ],
    )
    write_frames(root / "HS" / "s1" / "non_micro" / "x" / "s1_x_01", ["image1.bmp"], BMP)
    m = load_manifest("smic", str(root))
    assert list(m.columns) == MANIFEST_COLUMNS
    assert list(zip(m.subject, m["clip"], strict=True)) == [
        ("s01", "s01_ne_01"),
        ("s01", "s01_sur_02"),
        ("s02", "s02_po_01"),
    ]
    assert list(m.label) == [0, 2, 1] and list(m.emotion) == ["negative", "surprise", "positive"]
    assert list(m.onset) == [1001, 7, 123456] and list(m.offset) == [1003, 9, 123457]
    assert m.apex.isna().all() and set(m.fps) == {100}
    assert m.source[0].endswith("HS/s1/micro/negative/s1_ne_01")
    assert "holds no image frames" in rejected(m)["s02/s02_ne_03"]


def test_smic_bad_trees(tmp_path):
    with pytest.raises(InputError, match="holds no HS folder"):
        smic.load(str(tmp_path))
    smic_tree(
        tmp_path, [("s1", "negative", "s1_ne_01", [1]), ("s01", "negative", "s01_ne_01", [1])]
    )
    with pytest.raises(InputError, match="s01/s01_ne_01 appears twice"):
        smic.load(str(tmp_path))
    write_frames(tmp_path / "HS" / "s03" / "micro" / "happy" / "s03_po_01", ["image1.bmp"], BMP)
    with pytest.raises(InputError, match="happy: unknown class folder"):
        smic.load(str(tmp_path))


# CAS(ME)^3 part A


def test_casme3_clips_inside_material_folders(tmp_path):
    write_frames(tmp_path / "spNO.1" / "a" / "color", [f"{n}.jpg" for n in range(0, 60)])
    write_frames(tmp_path / "spNO.2" / "k" / "color", [f"{n}.jpg" for n in range(0, 20)])
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
    rows = [
        ["spNO.1", "a", 10, 14, 20, "R12", 1, "happy"],
        ["spNO.1", "a", 40, 45, 50, "L4", 2, "sad"],
        ["spNO.2", "k", 5, 6, 30, "4", 2, "anger"],  # offset past the 20 frames on disk
        ["spNO.2", "k", 1, 2, 3, "4", 7, "others"],
    ]
    write_xlsx(tmp_path / casme3.SHEET, header, rows)
    m = load_manifest("casme3", str(tmp_path))
    assert list(m["clip"]) == ["spNO.1_a_10", "spNO.1_a_40"]
    assert list(m.subject) == ["spNO.1", "spNO.1"]
    assert list(m.label) == [1, 0] and list(m.emotion) == ["happiness", "sadness"]
    assert list(m.onset) == [10, 40] and list(m.apex) == [14, 45] and set(m.fps) == {30}
    assert m.source[0] == str(tmp_path.resolve() / "spNO.1" / "a" / "color")
    assert set(rejected(m)) == {"spNO.2/spNO.2_k_5", "spNO.2/spNO.2_k_1"}
    rows.append(["spNO.1", "a", 10, 11, 12, "", 1, "happy"])
    write_xlsx(tmp_path / casme3.SHEET, header, rows)
    with pytest.raises(InputError, match=r"spNO.1_a_10 appears twice: .*row 2 and .*row 6"):
        casme3.load(str(tmp_path))
    rows[-1] = ["../spNO.1", "a", 10, 11, 12, "", 1, "happy"]
    write_xlsx(tmp_path / casme3.SHEET, header, rows)
    with pytest.raises(InputError, match=r"row 6: Subject '\.\./spNO\.1'"):
        casme3.load(str(tmp_path))


# Shared helpers


def test_list_frames_sorts_by_the_number_in_the_name(tmp_path):
    write_frames(tmp_path / "a", ["img10.jpg", "img2.jpg", "img1.jpg", "notes.txt", ".hidden.jpg"])
    write_frames(tmp_path / "b", ["006_01234.jpg", "006_00999.jpg", "reg_img46.jpg"])
    write_frames(tmp_path / "c", ["image0123456.bmp"], BMP)
    assert [n for n, _ in common.list_frames(str(tmp_path / "a"))] == [1, 2, 10]
    assert common.list_frames(str(tmp_path / "a"))[0][1] == str(tmp_path / "a" / "img1.jpg")
    assert [n for n, _ in common.list_frames(str(tmp_path / "b"))] == [46, 999, 1234]
    assert [n for n, _ in common.list_frames(str(tmp_path / "c"))] == [123456]
    with pytest.raises(InputError, match="does not exist"):
        common.list_frames(str(tmp_path / "d"))


@pytest.mark.parametrize(
    ("word", "canonical"),
    [
        ("Happy", "happiness"),
        (" SAD ", "sadness"),
        ("Other", "others"),
        ("Repression", "repression"),
    ],
)
def test_emotion_spellings(word, canonical):
    assert common.emotion_word(word, "sheet row 2") == canonical


def test_empty_manifest_keeps_columns_and_dtypes(tmp_path):
    root = casme2_tree(tmp_path, [CASME2_CLIPS[2]])  # only an 'others' clip
    m = casme2.load(str(root))
    assert len(m) == 0 and list(m.columns) == MANIFEST_COLUMNS
    assert m.apex.dtype == "Int64" and m.label.dtype == "int64"
    assert isinstance(m, pd.DataFrame) and len(m.attrs["rejects"]) == 1
