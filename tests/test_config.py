"""Config loading, overrides, range checks and stage hashes."""

import pytest
from tests_paths import REPO

from mer import config
from mer.errors import ConfigError


def test_demo_config_loads_and_overrides():
    cfg = config.load(str(REPO / "configs" / "demo.yaml"), ["finetune.gamma=1.5", "root=/tmp/x"])
    assert cfg.finetune.gamma == 1.5
    assert cfg.root == "/tmp/x"
    assert cfg.data_root() == "/tmp/x/data/synthetic"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("finetune.gamma=-0.1", "finetune.gamma"),
        ("finetune.freeze=6", "finetune.freeze"),
        ("keyframes.k=1", "keyframes.k"),
        ("keyframes.size=100", "keyframes.size"),
        ("keyframes.registration=ecc", "keyframes.registration"),
        ("finetune.beta=1.5", "finetune.beta"),
        ("search.protocol=magic", "search.protocol"),
        ("search.space={lr2: [1]}", "lr2"),
        ("data.dataset=casme9", "data.dataset"),
    ],
)
def test_out_of_range_values_name_the_setting(override, needle):
    with pytest.raises(ConfigError, match=needle):
        config.load(None, [override])


def test_unknown_keys_and_sections_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        config.load(None, ["finetune.gama=2"])
    with pytest.raises(ConfigError, match="unknown section"):
        config.load(None, ["trainer.x=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(None, ["gamma"])


def test_stage_hashes_change_only_with_their_sections():
    base = config.load(None)
    kf, pt = config.keyframes_hash(base), config.pretrain_hash(base)
    faster = config.load(None, ["keyframes.concurrency=16"])
    assert config.keyframes_hash(faster) == kf  # execution-only setting
    other_k = config.load(None, ["keyframes.k=8"])
    assert config.keyframes_hash(other_k) != kf
    assert config.pretrain_hash(other_k) != pt  # pretraining reads the key frames
    search_only = config.load(None, ["finetune.gamma=0.5", "search.experiment=x"])
    assert config.keyframes_hash(search_only) == kf
    assert config.pretrain_hash(search_only) == pt


def test_yaml_round_trip(tmp_path):
    cfg = config.load(None, ["model.width=0.25"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert config.load(str(p)).to_dict() == cfg.to_dict()


def test_jobs_print_one_line_errors_not_tracebacks():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "jobs/preprocess.py", "--set", "finetune.gamma=-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: config finetune.gamma=-1 is out of range: >= 0"
    missing = subprocess.run(
        [sys.executable, "jobs/results.py", str(REPO / "no-such-experiment")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "no search experiment here" in missing.stderr
    assert "Traceback" not in missing.stderr
