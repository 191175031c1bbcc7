"""The HTML reports of an experiment and of a study, opened in a real headless browser
(Chromium): the page renders, every image loads, and every number on it is the one
jobs/results.py --format json (or study.json) holds.

No Ray: the experiment is written by hand (tests/test_results.py's helpers), the study table
is the stored casme2-like one (benchmarks/). CI installs Chromium (.ci/run); elsewhere the
tests skip without it, naming what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_results import write_entry, write_meta
from tests_paths import REPO

from mer.evaluation import study_report
from mer.keyframes.table import read_keyframes
from mer.testing.fakes import write_random_keyframes

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
if BROWSER is None and os.environ.get("MER_REQUIRE_BROWSER") != "1":
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)

# Runs at the page's load event: the width each image decoded to (0: it did not load).
PROBE = (
    "<script>window.addEventListener('load', () => {"
    "const p = document.createElement('pre'); p.id = 'probe';"
    "p.textContent = JSON.stringify([...document.images].map(i => i.naturalWidth));"
    "document.body.appendChild(p);});</script>"
)


def browser(args: list[str], timeout: int = 120) -> str:
    """Run headless Chromium in its own process group, ended by PID on any exit."""
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += ["--no-first-run", "--disable-dev-shm-usage", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return out


class Cells(HTMLParser):
    """Numeric cells (data-entry, data-key -> text), image sources and the probe's text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.images: list[str] = []
        self.probe = ""
        self._open: tuple[str, str] | None = None
        self._in_probe = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-key" in a:
            self._open = (a["data-entry"], a["data-key"])
            self.cells[self._open] = ""
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "pre" and a.get("id") == "probe":
            self._in_probe = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._open = None
        elif tag == "pre":
            self._in_probe = False

    def handle_data(self, data):
        if self._open:
            self.cells[self._open] += data
        elif self._in_probe:
            self.probe += data


def open_in_browser(page: Path, shot: Path) -> Cells:
    """The page as the browser built it (after load), and a screenshot of it."""
    probed = page.with_name(page.stem + "-probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = browser(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()])
    browser(["--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()])
    cells = Cells()
    cells.feed(dom)
    return cells


def assert_rendered(cells: Cells, shot: Path) -> None:
    widths = json.loads(cells.probe)
    assert widths and len(widths) == len(cells.images) and all(w > 0 for w in widths), widths
    assert all(src.startswith("data:image/png;base64,") for src in cells.images)  # inline
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert (pixels < 200).mean() > 0.02, "the screenshot is (nearly) blank"


def expected(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def test_experiment_report_in_a_browser_shows_the_json_numbers(tmp_path):
    exp = str(tmp_path / "exp")
    write_meta(exp, [0, 1, 2])
    # The key-frame table the experiment names (as a search's _experiment.json does): 3
    # classes, 8 clips of 6 key frames at positions 3, 5.5, ... in parts of 3 clips.
    positions = [3.0, 5.5, 8.0, 10.5, 13.0, 15.5]
    kf = write_random_keyframes(
        str(tmp_path / "kf"), subjects=2, clips=4, k=6, s=24, part_size=3, positions=positions
    )
    meta = json.loads((Path(exp) / "_experiment.json").read_text())
    (Path(exp) / "_experiment.json").write_text(json.dumps({**meta, "keyframes": kf}))
    for entry, accuracy in (("good", 0.85), ("near", 0.84), ("poor", 0.35)):
        write_entry(exp, entry, accuracy, [0, 1, 2])
    write_entry(exp, "partial", 0.99, [0])
    write_entry(exp, "linear", 0.6, [0, 1, 2], baseline=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "jobs/results.py", exp]
    made = subprocess.run([*run, "--report", str(tmp_path / "out")], cwd=REPO, env=env, timeout=300)
    assert made.returncode == 0
    js = subprocess.run(
        [*run, "--format", "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    doc = json.loads(js.stdout)
    page = tmp_path / "out" / "report.html"
    assert not list(Path(tmp_path / "out").glob("plots/uf1_vs_freeze.png"))  # freeze not searched

    cells = open_in_browser(page, tmp_path / "report.png")
    assert_rendered(cells, tmp_path / "report.png")
    # intervals, per seed, confusion, UF1 against gamma, the key frames
    assert len(cells.images) == 5
    rows = doc["leaderboard"] + doc["incomplete"]
    scores = {e for e, k in cells.cells if not k.startswith("keyframes.")}
    assert scores == {r["config_id"] for r in rows}
    keys = ["uf1", "uf1_sd", "uf1_lo", "uf1_hi", "uar", "uar_sd", "uar_lo", "uar_hi"]
    keys += ["f1[negative]", "f1[positive]", "f1[surprise]", "uf1[d]"]
    for r in rows:
        for key in keys:
            assert cells.cells[(r["config_id"], key)] == expected(r.get(key)), (r["config_id"], key)
    # Configurations are named by their settings on the page.
    assert "gamma=0.85 (good)" in page.read_text()

    # The key-frame grid: one clip per class, each row's class, apex and positions the
    # table's, and its image (also plots/keyframes.png) a row per clip of 6 frames.
    _, clips, _ = read_keyframes(kf, frames=False)
    by_name = {f"{r.dataset}/{r.subject}/{r.clip}": r for r in clips.itertuples()}
    shown = {e for e, k in cells.cells if k.startswith("keyframes.")}
    assert len(shown) == 3 and shown <= set(by_name)
    assert {by_name[e].label for e in shown} == {0, 1, 2}
    classes = ["negative", "positive", "surprise"]
    for e in shown:
        r = by_name[e]
        assert cells.cells[(e, "keyframes.class")] == classes[r.label]
        assert cells.cells[(e, "keyframes.apex")] == str(r.apex)
        assert cells.cells[(e, "keyframes.positions")] == "3, 5.5, 8, 10.5, 13, 15.5"
    sheet = Image.open(tmp_path / "out" / "plots" / "keyframes.png")
    assert sheet.width > 1.5 * sheet.height  # 3 rows of 6 frames
    assert f"key-frame table the experiment trained on, {kf}" in page.read_text()


def test_study_report_in_a_browser_shows_the_tables_numbers(tmp_path):
    table = json.loads((REPO / "benchmarks" / "study_casme2_like.json").read_text())
    page = tmp_path / "report.html"
    page.write_text(study_report.html(table))
    cells = open_in_browser(page, tmp_path / "study.png")
    assert_rendered(cells, tmp_path / "study.png")
    seen = 0
    for r in table["rows"]:
        e = study_report.row_key(r)
        for m in ("uf1", "uar"):
            for k in ("mean", "sd", "lo", "hi"):
                assert cells.cells[(e, f"{m}.{k}")] == expected((r.get(m) or {}).get(k))
                seen += 1
            d = (r.get("full_minus_row") or {}).get(m)
            if d:
                for k in ("difference", "ci_low", "ci_high"):
                    assert cells.cells[(e, f"full_minus_row.{m}.{k}")] == expected(d[k])
                assert cells.cells[(e, f"full_minus_row.{m}.p_value")] == expected(d["p_value"], 4)
                seen += 4
    assert seen == len(cells.cells)  # every number on the page was checked
    text = page.read_text()
    assert "Claims and verdicts" in text and "no evidence of a difference" in text
