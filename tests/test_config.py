"""Config loading, overrides, range checks and stage hashes."""

import dataclasses
import re

import pytest
from tests_paths import REPO

from mer import config, layout
from mer.errors import ConfigError
from mer.folds import FoldRun
from mer.testing.model_sizes import DEMO_MODEL


def test_demo_config_loads_and_overrides():
    cfg = config.load(str(REPO / "configs" / "demo.yaml"), ["finetune.gamma=1.5", "root=/tmp/x"])
    assert cfg.finetune.gamma == 1.5
    assert cfg.root == "/tmp/x"
    # Synthetic data lives in one folder per generator setting.
    assert layout.data_root(cfg) == f"/tmp/x/data/synthetic/{layout.data_hash(cfg)}"


def test_the_benchmarks_demo_model_is_configs_demo_yaml():
    """mer.testing.model_sizes.DEMO_MODEL, the model the inference benchmarks build, changes
    nothing on top of configs/demo.yaml."""
    demo = str(REPO / "configs" / "demo.yaml")
    assert config.load(demo, DEMO_MODEL) == config.load(demo)
    assert config.load(demo, [*DEMO_MODEL, "model.head_hidden=32"]) != config.load(demo)


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
        # Wrong types and ranges a user types on the command line.
        ("finetune.epochs=ten", "finetune.epochs='ten' must be an integer"),
        ("keyframes.k=8.5", "keyframes.k=8.5 must be an integer"),
        ("search.num_samples=0", "search.num_samples"),
        ("resources.max_concurrent=-3", "resources.max_concurrent"),
        ("data.protocol=4class", "data.protocol"),
        ("finetune.lr=0", "finetune.lr"),
        ("model.dropout=1.5", "model.dropout"),
        ("keyframes.face_crop=maybe", "keyframes.face_crop='maybe' must be true or false"),
        ("search.seeds=[0, 0]", "search.seeds"),
        ("search.seeds=3", "search.seeds=3 must be a list"),
        ("search.space={freeze: [0, 7]}", "search.space.freeze"),
        ("search.space={gamma: {uniform: [2, 1]}}", "search.space.gamma"),
        ("finetune.alpha=[1, 2]", "finetune.alpha"),
        ("data.synthetic.subjectz=3", "data.synthetic"),
        ("keyframes.max_reject_fraction=2", "keyframes.max_reject_fraction"),
        ("search.num_samples=3", "search.seeds"),  # grid repeats are seeds
        ("root=", "root is empty"),
        ("pretrain.prior_groups=1", "pretrain.prior_groups"),
        ("pretrain.prior_groups=0", "pretrain.prior_groups"),
        ("pretrain.prior_groups=2.5", "pretrain.prior_groups"),
    ],
)
def test_out_of_range_values_name_the_setting(override, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        config.load(None, [override])
    assert "\n" not in str(info.value)  # one sentence


@pytest.mark.parametrize(
    "overrides",
    [
        ["search.protocol=nested", "search.algorithm=optuna", "search.num_samples=2"],
        ["search.protocol=nested", "search.early_stop=asha"],
    ],
)
def test_nested_refuses_searchers_that_would_see_held_out_scores(overrides):
    with pytest.raises(ConfigError, match="held-out subjects"):
        config.load(None, overrides)


def test_unknown_keys_and_sections_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        config.load(None, ["finetune.gama=2"])
    with pytest.raises(ConfigError, match="unknown section"):
        config.load(None, ["trainer.x=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(None, ["gamma"])


def test_an_unknown_key_names_where_it_came_from(tmp_path):
    """A misspelt --set names the --set (not the config file, which never held it) and the
    key it probably meant; a misspelt key in a file names the file."""
    demo = str(REPO / "configs" / "demo.yaml")
    with pytest.raises(ConfigError) as info:
        config.load(demo, ["finetune.epoch=10"])
    message = str(info.value)
    assert message.startswith("--set finetune.epoch=10: unknown key 'epoch' in 'finetune'")
    assert "did you mean 'epochs'" in message and "demo.yaml" not in message
    with pytest.raises(ConfigError, match=r"^--set trainer\.x=1: unknown section 'trainer'"):
        config.load(demo, ["trainer.x=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: {epoch: 10}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: unknown key"):
        config.load(str(bad), ["finetune.epochs=10"])
    # A whole section set at once stays possible.
    assert config.load(demo, ["model={width: 0.25}"]).model.width == 0.25


def test_stage_hashes_change_only_with_the_settings_that_determine_them():
    base = config.load(None)
    kf, pt = layout.keyframes_hash(base), layout.prior_hash(base)
    faster = config.load(None, ["keyframes.concurrency=16", "resources.max_concurrent=3"])
    assert layout.keyframes_hash(faster) == kf and layout.prior_hash(faster) == pt
    other_k = config.load(None, ["keyframes.k=8"])
    assert layout.keyframes_hash(other_k) != kf
    assert layout.prior_hash(other_k) != pt  # pretraining reads the key frames
    other_data = config.load(None, ["data.synthetic.subjects=6"])
    assert layout.keyframes_hash(other_data) != kf  # chained through the data
    search_only = config.load(None, ["finetune.gamma=0.5", "search.experiment=x"])
    assert layout.keyframes_hash(search_only) == kf
    assert layout.prior_hash(search_only) == pt
    assert layout.prior_hash(config.load(None, ["pretrain.seed=1"])) != pt
    assert layout.prior_hash(config.load(None, ["resources.workers=2"])) != pt  # DDP batches
    run = FoldRun("f", 0, "outer", "f", ["a/1"], ["a/2"], prior="f")
    h = layout.run_hash(base, run)
    for change in ("finetune.lr=0.01", "finetune.seed=3", "model.width=0.5", "pretrain.epochs=2"):
        assert layout.run_hash(config.load(None, [change]), run) != h, change
    assert layout.run_hash(base, dataclasses.replace(run, train_subjects=["a/3"])) != h
    # How a prior's norm statistics are made keys the prior and what reads it, and nothing
    # made without prior learning.
    precise = ["pretrain.precise_norms=false"]
    assert layout.prior_hash(config.load(None, precise)) != pt
    exp = layout.experiment_settings
    assert exp(config.load(None, precise)) != exp(base)
    scratch = ["pretrain.enabled=false"]
    assert exp(config.load(None, [*scratch, *precise])) == exp(config.load(None, scratch))


def test_a_named_folder_refuses_other_settings_naming_them(tmp_path):
    folder = str(tmp_path / "exp")
    a = layout.experiment_settings(config.load(None, ["finetune.lr=0.001"]))
    layout.claim(folder, a, "an experiment", "choose another name")
    layout.claim(folder, a, "an experiment", "choose another name")  # same settings: fine
    b = layout.experiment_settings(config.load(None, ["finetune.lr=0.01"]))
    with pytest.raises(ConfigError, match=r"finetune.lr=0.001 \(this run: 0.01\)"):
        layout.claim(folder, b, "an experiment", "choose another name")


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
    assert out.stderr.strip() == "error: config finetune.gamma=-1.0 is out of range: >= 0"
    missing = subprocess.run(
        [sys.executable, "jobs/results.py", str(REPO / "no-such-experiment")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "no search experiment here" in missing.stderr
    assert "Traceback" not in missing.stderr


def run_job(args, env):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_storage_is_checked_before_any_work_with_one_sentence(s3_endpoint, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    job = ["jobs/preprocess.py", "--config", "configs/casme2.yaml"]
    # The configs' placeholder bucket.
    out = run_job(job, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "placeholder YOUR-BUCKET" in out.stderr and out.stderr.count("\n") == 1
    real = ["--root", "s3://mer-test/run", "--set", "data.root=s3://mer-test/data"]
    # A bucket that does not exist.
    out = run_job(
        [*job, "--root", "s3://no-such-bucket/run", "--set", "data.root=s3://mer-test/d"], env
    )
    assert out.returncode == 2 and "bucket no-such-bucket does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    # No credentials anywhere (environment, files, instance metadata).
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    bare.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(tmp_path),
    )
    out = run_job([*job, *real], bare)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "no AWS credentials were found" in out.stderr and "s3://mer-test/run" in out.stderr
    assert "Started a local Ray" not in out.stderr + out.stdout  # refused before Ray


def test_a_real_dataset_with_the_demos_tiny_model_says_so(tmp_path):
    import io
    from contextlib import redirect_stderr

    from mer import cli

    cfg = config.load(str(REPO / "configs" / "demo.yaml"), ["data.dataset=casme2"])
    err = io.StringIO()
    with redirect_stderr(err):
        cli.warn_small_model(cfg, "configs/demo.yaml")
    assert "demo-sized model" in err.getvalue() and "configs/casme2.yaml" in err.getvalue()
    err = io.StringIO()
    with redirect_stderr(err):
        cli.warn_small_model(config.load(str(REPO / "configs" / "casme2.yaml")), "c")
    assert err.getvalue() == ""


def test_a_failed_job_leaves_no_folder_it_made_only_for_its_log(tmp_path, monkeypatch):
    """A job that fails on bad input removes the run root (and parents) it created for its log
    when it wrote nothing else there; a root with outputs keeps the failed run's log."""
    from mer import cli
    from mer.errors import InputError

    def failing_job(root):
        def job():
            path, _ = cli.log_file(config.load(None, [f"root={root}"]))
            with open(path, "w") as f:
                f.write("Ray's start-up lines\n")
            raise InputError("bad input")

        return job

    for name in ("_CREATED", "_LOG"):
        monkeypatch.setattr(cli, name, [])
    with pytest.raises(SystemExit) as info:
        cli.main(failing_job(tmp_path / "typo" / "root"))
    assert info.value.code == 2
    assert list(tmp_path.iterdir()) == []

    used = tmp_path / "used"
    (used / "keyframes").mkdir(parents=True)
    for name in ("_CREATED", "_LOG"):
        monkeypatch.setattr(cli, name, [])
    with pytest.raises(SystemExit):
        cli.main(failing_job(used))
    assert len(list((used / "logs").iterdir())) == 1  # beside the outputs, the log stays


def test_the_raylets_startup_concurrency_warning_goes_to_the_log_not_the_job_output(tmp_path):
    """The raylet's worker-pool warning, as the driver prints it on stdout, lands in the run's
    log file; every other line passes through in order."""
    import subprocess
    import sys

    log = tmp_path / "run.log"
    warning = (
        "\x1b[33m(raylet)\x1b[0m WARNING: 28 PYTHON worker processes have been started on node: "
        "abc with address: 127.0.0.1, which is 14x the maximum expected startup concurrency "
        "(2). This could be a result of using a large number of actors, ..."
    )
    script = (
        "from mer import cli\n"
        f"cli._route_lines(1, cli._STARTUP_WARNING.search, {str(log)!r})\n"
        "print('[search] 1/2 fold runs', flush=True)\n"
        f"print({warning!r}, flush=True)\n"
        "print('[search] 2/2 fold runs')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[search] 1/2 fold runs\n[search] 2/2 fold runs\n"
    assert "14x the maximum expected startup concurrency" in log.read_text()
