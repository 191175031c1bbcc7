"""Reliability: safe checkpoints, determinism, and S3 going away in the middle of a write."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from tests_paths import TINY

from mer import config, storage
from mer.errors import StorageError


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    from mer.train.checkpoints import load_state, save_state

    good = str(tmp_path / "good.pt")
    save_state({"w": torch.ones(2), "epoch": 3}, good)
    assert load_state(good)["epoch"] == 3
    evil = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2), "x": Payload()}, buf)
    evil.write_bytes(buf.getvalue())
    with pytest.raises(pickle.UnpicklingError):
        load_state(str(evil))


def test_same_config_and_seed_give_identical_key_frames(tmp_path):
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.keyframes.table import read_keyframes
    from mer.layout import keyframes_uri

    data = tmp_path / "data"
    generate(str(data), subjects=2, clips_per_subject=3, seed=5, size=(96, 80), frames=(40, 50))
    tables = []
    for run in ("a", "b"):
        cfg = config.load(
            None,
            [f"root={tmp_path / run}", f"data.root={data}", "keyframes.k=8", "keyframes.size=32"],
        )
        build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
        tables.append(read_keyframes(keyframes_uri(cfg)))
    (_, a, fa), (_, b, fb) = tables
    assert fa.tobytes() == fb.tobytes()
    assert a["keyframe_indices"].map(list).tolist() == b["keyframe_indices"].map(list).tolist()


def test_same_seed_gives_same_predictions_on_cpu(fake_keyframes):
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.metrics import summarise
    from mer.train.finetune import train_fold_run
    from mer.train.runtime import Worker

    cfg = config.load(
        None,
        [
            *TINY,
            "model.head_hidden=16",
            "finetune.epochs=2",
            "pretrain.enabled=false",
        ],
    )
    table = load_table(fake_keyframes)
    runs = outer_runs(fold_specs(table))[:2]
    w = Worker(0, 1, torch.device("cpu"))
    outs = []
    for _ in range(2):
        preds = [train_fold_run(cfg, table, r, None, 3, w) for r in runs]
        outs.append(preds)
    for p, q in zip(outs[0], outs[1], strict=True):
        assert np.array_equal(np.stack(p["probs"]), np.stack(q["probs"]))
    import pandas as pd

    assert summarise(pd.concat(outs[0]), 3) == summarise(pd.concat(outs[1]), 3)


def test_s3_endpoint_down_mid_write_then_back(tmp_path, monkeypatch):
    """The endpoint stops during the key-frame stage: a clear error, no table that reads as
    complete; once it is back, a rerun finishes with every clip exactly once."""
    from mer.datasets import load_manifest
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.chunks import process_chunk
    from mer.keyframes.preprocess import (
        build_keyframes_dataset,
        chunk_items,
        chunk_settings,
        manifest_rows,
    )
    from mer.keyframes.table import read_keyframes
    from mer.layout import keyframes_uri
    from mer.testing.s3 import LocalS3

    server = LocalS3("flaky", env={"AWS_MAX_ATTEMPTS": "2"}).start()
    try:
        storage.filesystem("s3://flaky")[0].clear_instance_cache()
        data = tmp_path / "data"
        generate(str(data), subjects=2, clips_per_subject=3, seed=2, size=(96, 80), frames=(40, 50))
        cfg = config.load(
            None,
            [
                "root=s3://flaky/run",
                f"data.root={data}",
                "keyframes.k=8",
                "keyframes.size=32",
                "keyframes.chunk_size=3",
            ],
        )
        manifest = load_manifest("synthetic", str(data))
        out = keyframes_uri(cfg)
        items = chunk_items(cfg, manifest_rows(manifest))
        assert len(items) == 2
        kf = chunk_settings(cfg)
        process_chunk(items[0], kf)
        server.pause()  # the endpoint goes away before the second chunk's write
        with pytest.raises(StorageError, match=r"s3://flaky/run/keyframes/synthetic/\w+/part-"):
            process_chunk(items[1], kf)
        server.resume()  # back, with what it stored before
        with pytest.raises(Exception, match="_meta.json"):
            read_keyframes(out)
        lines = []
        meta = build_keyframes_dataset(cfg, manifest, progress=lines.append, use_ray=False)
        assert any("resuming: 1/2 chunks done" in line for line in lines)
        _, clips, _ = read_keyframes(out)
        assert sorted(clips["clip"]) == sorted(manifest["clip"])
        assert meta["counts"]["written"] == len(manifest)
    finally:
        server.close()
