"""MkDocs hook: the benchmark journal (benchmarks/*.md and the images they show) joins the site.

The pages under docs/ link to it as ../benchmarks/README.md, which is right on GitHub but
outside MkDocs' docs_dir. The files are added to the site as benchmarks/..., and links in
docs pages that start with ../benchmarks/ are read as benchmarks/..., so `mkdocs build
--strict` checks those links like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SUFFIXES = (".md", ".png")
LINK = re.compile(r"\]\(\.\./benchmarks/")


def on_files(files: Files, config) -> Files:
    for path in sorted(BENCHMARKS.iterdir()):
        if path.suffix in SUFFIXES:
            files.append(File.generated(config, f"benchmarks/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    # A page in docs/ (not in docs/benchmarks/) sees the journal one folder down.
    if page.file.src_uri.startswith("benchmarks/"):
        return markdown
    depth = page.file.src_uri.count("/")
    return LINK.sub("](" + "../" * depth + "benchmarks/", markdown)
