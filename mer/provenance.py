"""What made a result: the code version, the platform and the thread count, and the rule for
combining results made by different ones.

Every key-frame table, prior, fold run and baseline prediction records:

  code      a hash of the `mer` package's source (every .py file under mer/, by path and
            content): the code that computed. It is the same for a git checkout and for
            the unpacked copy a submitted Ray job runs in (which has no .git).
  commit    the git commit of the checkout, with "+dirty" when tracked files differ from
            it; None where there is no git repository (a submitted job's copy).
  platform  the CPU model and kernels (or GPU) and the torch version (`platform`).
  threads   the torch thread count.

None of them enters a settings hash (mer/layout.py): a new commit does not recompute
finished work. They are checked where results are combined: a comparison or a study whose
rows were made by different code, platforms or thread counts is refused with one sentence
naming the rows, unless the caller allows it (`--allow-mixed`), and the output then names
the rows. The check reads `code`, not `commit`: a commit that changes only documentation or
tests leaves `code` as it was, while a dirty tree's edits change it.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from mer.errors import InputError

PACKAGE = Path(__file__).resolve().parent
NOT_RECORDED = "not recorded"
# The provenance columns of a prediction file, compared when rows are combined.
CHECKED = ("code", "platform", "threads")


class CodeVersion(NamedTuple):
    code: str  # hash of the package source
    commit: str | None  # git commit (+dirty), or None without a git repository


@functools.cache
def code_version() -> CodeVersion:
    """The running code's version (computed once per process)."""
    return CodeVersion(source_hash(PACKAGE), _git_commit(PACKAGE.parent))


def source_hash(package: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git_commit(repo: Path) -> str | None:
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=20
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


def record() -> dict:
    """The code fields every output records ({"code": ..., "commit": ...})."""
    v = code_version()
    return {"code": v.code, "commit": v.commit}


def of_predictions(preds: pd.DataFrame, checked: tuple[str, ...] = CHECKED) -> dict:
    """{field: sorted distinct values} of a prediction frame's provenance columns (`checked`
    and the commit); a missing column (outputs made before it was recorded) reads as 'not
    recorded'."""
    out = {}
    for col in (*checked, "commit"):
        if col in preds.columns and len(preds):
            out[col] = sorted({NOT_RECORDED if pd.isna(v) else str(v) for v in preds[col]})
        else:
            out[col] = [NOT_RECORDED]
    return out


def mixed(rows: dict[str, dict]) -> list[str]:
    """What differs between rows ({row name: of_predictions(...)}): one phrase per checked
    field that takes more than one value, naming the rows of each value; [] when all agree.
    A field a row does not carry (a baseline's threads) is not compared for that row."""
    out = []
    for col in CHECKED:
        by: dict[str, list[str]] = {}
        for name, prov in rows.items():
            if col in prov:
                by.setdefault(" + ".join(prov[col]), []).append(name)
        if len(by) > 1 or any(" + " in value for value in by):
            parts = "; ".join(f"{', '.join(names)}: {value}" for value, names in by.items())
            out.append(f"{col} ({parts})")
    return out


def check_combinable(rows: dict[str, dict], allow_mixed: bool, what: str) -> list[str]:
    """Refuse (InputError) rows made by different code, platforms or thread counts unless
    allow_mixed; returns what differs (empty when nothing does)."""
    diff = mixed(rows)
    if diff and not allow_mixed:
        raise InputError(
            f"{what} combines rows made by different {', '.join(d.split(' (')[0] for d in diff)}"
            f": {' / '.join(diff)}; rerun them with one code version on one platform and "
            "thread count, or pass --allow-mixed to combine them anyway (the output then "
            "names them)"
        )
    return diff


def platform(device: torch.device) -> str:
    """What computed: the GPU's name, or the CPU's model and the instruction set torch's
    kernels use, and the torch version. The same run gives other digits on another platform
    (other kernels, other summation orders), so every fold run and prior records it."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or "cpu"
        name += f" ({torch.backends.cpu.get_cpu_capability()})"
    return f"{name}, torch {torch.__version__}"


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform as platform_mod

    return platform_mod.processor()
