"""The package reads as the pipeline does: each stage imports only the shared vocabulary and
the stages before it, the library never imports its test tooling, and nothing imports the
pipeline driver (docs/design.md, "Stages"). Imports are read as text, inside functions too."""

import ast
from pathlib import Path

MER = Path(__file__).resolve().parents[1] / "mer"

# Shared vocabulary (flat modules) is rank 0. The dataset registry and the synthetic
# generator's settings are read by config checks and the data hash (mer.layout), so they
# sit with the vocabulary: both import nothing above mer.errors.
VOCABULARY = {"mer.datasets", "mer.datasets.synthetic", "mer.datasets.synthetic.settings"}
STAGES = [  # in pipeline order
    ("mer.datasets", 1),
    ("mer.keyframes", 2),
    ("mer.train", 3),
    ("mer.evaluation", 4),
    ("mer.spotting", 5),  # long videos -> intervals; spot-then-recognise serves from it
    ("mer.serving", 6),
    ("mer.pipeline", 7),
    ("mer.testing", 8),
]


def rank(module: str) -> int:
    if module in VOCABULARY:
        return 0
    for prefix, r in STAGES:
        if module == prefix or module.startswith(prefix + "."):
            return r
    return 0


def modules() -> dict[str, Path]:
    out = {}
    for path in MER.rglob("*.py"):
        parts = path.relative_to(MER.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def edges() -> list[tuple[str, str]]:
    mods = modules()
    out = []
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for n in names:
                if n in mods and n != m and not n.startswith(m + ".") and not m.startswith(n + "."):
                    out.append((m, n))
    return out


def test_no_module_imports_a_later_stage():
    against = [(a, b) for a, b in edges() if rank(b) > rank(a)]
    assert not against, f"imports against the stage order: {against}"


def test_the_library_never_imports_its_test_tooling_or_the_pipeline_driver():
    wrong = [
        (a, b)
        for a, b in edges()
        if not a.startswith("mer.testing")
        and (b.startswith("mer.testing") or (b == "mer.pipeline" and a != "mer.pipeline"))
    ]
    assert not wrong, wrong


# The modules that run a stage from a config. Only the pipeline driver (and jobs/) call
# them; the training loops (mer.train.pretrain, mer.train.finetune) are the train stage's
# library, run per fold by the evaluation stage and once by serving's export.
DRIVERS = {
    "mer.datasets.stage",
    "mer.train.interpolate",
    "mer.keyframes.preprocess",
    "mer.evaluation.stage",
    "mer.serving.export",
}


def test_only_the_pipeline_driver_calls_the_stages_drivers():
    wrong = [
        (a, b)
        for a, b in edges()
        if b in DRIVERS and a != "mer.pipeline" and not a.startswith("mer.testing")
    ]
    assert not wrong, f"a stage reaching another stage's driver: {wrong}"


def test_every_stage_is_a_package_with_its_driver():
    mods = modules()
    for prefix, _ in STAGES:
        if prefix != "mer.pipeline":
            assert (MER.parent / prefix.replace(".", "/") / "__init__.py").exists(), prefix
    assert "mer.datasets.stage" in mods and "mer.evaluation.stage" in mods


def test_no_job_shadows_a_standard_library_module():
    """`python jobs/X.py` puts jobs/ first on sys.path: a job named like a standard module
    (inspect, ...) would replace it for every import of every job."""
    import sys

    jobs = {p.stem for p in (MER.parent / "jobs").glob("*.py")}
    assert jobs and not jobs & set(sys.stdlib_module_names), jobs & set(sys.stdlib_module_names)
