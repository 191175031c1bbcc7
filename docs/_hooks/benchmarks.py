"""MkDocs hook: the repository's README is the site's home page, and the benchmark journal
(benchmarks/*.md and the images they show) joins the site.

Both live outside MkDocs' docs_dir, and their links are written for GitHub: the README links
docs/<page>.md and benchmarks/README.md, the pages under docs/ link ../benchmarks/README.md.
The files are added to the site as index.md and benchmarks/..., and those links are rewritten
to where the files sit in the site, so `mkdocs build --strict` checks them like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SUFFIXES = (".md", ".png")
TO_BENCHMARKS = re.compile(r"\]\(\.\./benchmarks/")
TO_DOCS = re.compile(r"\]\(docs/")


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", abs_src_path=str(REPO / "README.md")))
    for path in sorted(BENCHMARKS.iterdir()):
        if path.suffix in SUFFIXES:
            files.append(File.generated(config, f"benchmarks/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri
    if src == "index.md":  # the README: docs/<page>.md is <page>.md here
        return TO_DOCS.sub("](", markdown)
    if src.startswith("benchmarks/"):
        return markdown
    # A page in docs/ sees the journal one folder down.
    return TO_BENCHMARKS.sub("](" + "../" * src.count("/") + "benchmarks/", markdown)
