"""Prior learning and target learning on Ray Train: pairs, DDP, fault tolerance, LOSO quality."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mer import config, storage
from mer.train import data
from mer.train.finetune import outer_runs, read_predictions, run_finetune
from mer.train.pretrain import fold_specs, run_pretraining

SMALL = [
    "keyframes.k=8",
    "keyframes.size=32",
    "model.width=0.125",
    "model.embedding_dim=16",
    "model.head_hidden=32",
    "pretrain.epochs=2",
    "pretrain.pairs_per_epoch=32",
    "pretrain.batch_size=8",
    "finetune.epochs=2",
    "finetune.batch_size=8",
    "resources.cpus_per_worker=1",
]


def small_cfg(root, *extra):
    return config.load(None, [f"root={root}", *SMALL, *extra])


def test_pairs_use_training_subjects_only_and_are_balanced(fake_keyframes):
    table = data.load_table(fake_keyframes)
    keys = table.subject_keys
    for fold in fold_specs(table):
        idx = table.indices_of(fold["train_subjects"])
        labels = table.clips["label"].to_numpy()[idx]
        a, b, same = data.sample_pairs(labels, 200, np.random.default_rng(fold["index"]))
        used = set(keys[idx[a]]) | set(keys[idx[b]])
        assert fold["key"] not in used
        assert not set(fold["test_subjects"]) & used
        assert (a != b).all()
        assert same.mean() == pytest.approx(0.5)
        assert (labels[a] == labels[b]).tolist() == (same == 1).tolist()


def test_shards_give_every_rank_the_same_steps():
    order = np.arange(37)
    shards = [data.shard(order, r, 2, 8) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert not set(np.concatenate(shards[0])) & set(np.concatenate(shards[1]))


def test_two_gloo_workers_end_with_identical_parameters(ray_local, fake_keyframes, tmp_path):
    cfg = small_cfg(tmp_path, "resources.workers=2")
    folds = fold_specs(data.load_table(fake_keyframes))[:1]
    run_pretraining(cfg, fake_keyframes, folds, _digest_dir=str(tmp_path / "digests"))
    digests = [
        (tmp_path / "digests" / f"{folds[0]['name']}-rank{r}.txt").read_text() for r in (0, 1)
    ]
    assert digests[0] == digests[1]
    assert storage.exists(str(tmp_path / "pretrain" / folds[0]["name"] / "prior.pt"))


def test_killed_worker_is_replaced_and_resumes_from_last_checkpoint(
    ray_local, fake_keyframes, tmp_path
):
    cfg = small_cfg(tmp_path, "pretrain.epochs=3")
    fold = fold_specs(data.load_table(fake_keyframes))[0]
    marker = tmp_path / "killed"
    # The rank-0 worker process exits (os._exit) in the middle of the third epoch, a few
    # seconds after epoch 2's checkpoint was reported.
    fault = {"fold": fold["name"], "epoch": 2, "marker": str(marker), "delay": 3.0}
    run_pretraining(cfg, fake_keyframes, [fold], _fault=fault)
    killed_pid = int(marker.read_text())
    done = json.loads((tmp_path / "pretrain" / fold["name"] / "_done.json").read_text())
    history = done["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # same epochs, none repeated
    pids = [h["worker_pid"] for h in history]
    # Epochs 1-2 by the killed worker (restored from its checkpoint), epoch 3 by the new one.
    assert pids[0] == pids[1] == killed_pid != pids[2]


def test_finetune_writes_per_clip_predictions_per_fold(ray_local, fake_keyframes, tmp_path):
    cfg = small_cfg(tmp_path, "pretrain.enabled=false")
    folds = fold_specs(data.load_table(fake_keyframes))[:2]
    out = str(tmp_path / "ft")
    preds = run_finetune(cfg, fake_keyframes, outer_runs(folds, cfg), out)
    assert sorted(preds["run"].unique()) == sorted(f["name"] for f in folds)
    for f in folds:
        p = preds[preds["run"] == f["name"]]
        assert set(p["dataset"] + "/" + p["subject"]) == set(f["test_subjects"])
        assert np.allclose(np.stack(p["probs"]).sum(1), 1.0, atol=1e-4)
    # A second fit finds every fold done and leaves the files untouched.
    mtimes = {
        f: os.path.getmtime(os.path.join(out, "folds", f))
        for f in os.listdir(os.path.join(out, "folds"))
    }
    run_finetune(cfg, fake_keyframes, outer_runs(folds, cfg), out)
    assert mtimes == {f: os.path.getmtime(os.path.join(out, "folds", f)) for f in mtimes}
    assert len(read_predictions(out)) == len(preds)


# Majority-class baseline on the synthetic set (57 % negative): UF1 = F1(neg)/3 ~ 0.24.
# The method must clear it clearly. Measured here at seed 0: 0.53 (prior + target), 0.48
# (scratch); training seeds 0-2 give 0.52-0.65 and 0.48-0.64 (benchmarks/README.md).
UF1_THRESHOLD = 0.45


def test_loso_on_synthetic_beats_majority_and_compares_with_scratch(
    ray_local, synthetic_keyframes, tmp_path
):
    from mer.metrics import summarise

    kf = synthetic_keyframes
    table = data.load_table(kf)
    folds = fold_specs(table)
    assert len(folds) >= 6
    common = [
        "model.input=delta",
        "pretrain.epochs=3",
        "pretrain.pairs_per_epoch=96",
        "pretrain.lr=0.0005",
        "pretrain.augment=false",
        "finetune.epochs=30",
        "finetune.lr=0.0005",
        "finetune.augment=false",
        "finetune.freeze=0",
        "seed=0",
    ]
    cfg = small_cfg(tmp_path, *common)
    run_pretraining(cfg, kf, folds)
    pre = run_finetune(cfg, kf, outer_runs(folds, cfg), str(tmp_path / "pretrained"))
    scratch_cfg = small_cfg(tmp_path, *common, "pretrain.enabled=false", "finetune.freeze=0")
    scratch = run_finetune(
        scratch_cfg, kf, outer_runs(folds, scratch_cfg), str(tmp_path / "scratch")
    )
    labels = table.clips["label"].to_numpy()
    majority = np.full_like(labels, np.bincount(labels).argmax())
    base = summarise(
        table.clips.assign(pred=majority)[["dataset", "subject", "clip", "label", "pred"]], 3
    )
    s_pre, s_scratch = summarise(pre, 3), summarise(scratch, 3)
    print(
        f"\nLOSO over {len(folds)} subjects: majority UF1 {base['uf1']:.3f}; "
        f"prior+target UF1 {s_pre['uf1']:.3f} UAR {s_pre['uar']:.3f}; "
        f"scratch UF1 {s_scratch['uf1']:.3f} UAR {s_scratch['uar']:.3f}"
    )
    assert len(pre) == len(table.clips) == len(scratch)  # every clip held out once
    assert s_pre["uf1"] >= UF1_THRESHOLD > base["uf1"] + 0.15
