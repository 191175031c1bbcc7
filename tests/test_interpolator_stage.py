"""The learned interpolator as a stage: trained on Ray Train from the dataset's own frames,
used by the key-frame stage for fractional positions, keyed like every other output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mer import config, layout, storage
from mer.datasets.synthetic.generator import generate
from mer.errors import ConfigError, InputError
from mer.keyframes.preprocess import build_keyframes_dataset
from mer.keyframes.table import read_keyframes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ip") / "data"
    generate(str(root), subjects=2, clips_per_subject=2, seed=4, size=(96, 80), frames=(14, 18))
    return str(root)


def cfg_for(root, data, *extra):
    # 14-18 frames for k=12: several key frames share a frame and stay fractional.
    return config.load(
        None,
        [
            f"root={root}",
            f"data.root={data}",
            "keyframes.k=12",
            "keyframes.size=32",
            "keyframes.method=uniform",
            "interpolator.steps=20",
            "interpolator.batch_size=4",
            "interpolator.base=8",
            "interpolator.levels=2",
            *extra,
        ],
    )


def test_interpolator_is_keyed_and_chained_into_the_key_frames(tmp_path):
    data = str(tmp_path)
    linear = cfg_for(tmp_path, data)
    adaconv = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv")
    other = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv", "interpolator.steps=21")
    assert layout.keyframes_uri(adaconv) != layout.keyframes_uri(linear)
    assert layout.interpolator_uri(other) != layout.interpolator_uri(adaconv)
    assert layout.keyframes_uri(other) != layout.keyframes_uri(adaconv)  # chained
    # Settings that only shape the network's training, not the frames, leave linear alone.
    assert layout.keyframes_uri(cfg_for(tmp_path, data, "interpolator.steps=21")) == (
        layout.keyframes_uri(linear)
    )


def test_a_gpu_share_keys_only_the_learned_interpolators_frames_and_needs_a_gpu(tmp_path):
    from mer.keyframes.clip_records import load_interpolator
    from mer.keyframes.interpolator import Interpolator, InterpolatorConfig

    data = str(tmp_path)
    adaconv = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv")
    on_gpu = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv", "keyframes.gpus=0.25")
    # CUDA may round a rendered frame differently: its own key frames, beside the CPU's.
    assert layout.keyframes_uri(on_gpu) != layout.keyframes_uri(adaconv)
    assert layout.keyframes_uri(
        cfg_for(tmp_path, data, "keyframes.interpolation=adaconv", "keyframes.gpus=0.5")
    ) == layout.keyframes_uri(on_gpu)  # how much of a GPU is execution, not output
    linear = cfg_for(tmp_path, data)
    assert layout.keyframes_uri(cfg_for(tmp_path, data, "keyframes.gpus=0.25")) == (
        layout.keyframes_uri(linear)
    )
    with pytest.raises(ConfigError, match="keyframes.gpus"):
        cfg_for(tmp_path, data, "keyframes.gpus=-1")
    uri = str(tmp_path / "ip.pt")
    Interpolator(InterpolatorConfig(image_size=32, channels=3, base=8, levels=2)).save(uri)
    assert load_interpolator(uri, 32, 3).identity.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU"):
            load_interpolator(uri, 32, 3, cuda=True)


def test_key_frames_without_a_trained_interpolator_say_so(tmp_path, data):
    cfg = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv")
    with pytest.raises(InputError, match="not trained yet; run jobs/interpolator.py"):
        build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)


def test_trained_on_ray_and_used_for_fractional_key_frames(ray_local, tmp_path, data):
    from mer.keyframes.interpolator import Interpolator
    from mer.train.interpolate import run_interpolator

    cfg = cfg_for(tmp_path, data, "keyframes.interpolation=adaconv")
    lines = []
    file = run_interpolator(cfg, progress=lines.append)
    assert file == layout.interpolator_file(cfg) and storage.exists(file)
    done = storage.read_json(storage.join(layout.interpolator_uri(cfg), "_done.json"))
    assert done["clips_per_worker"] == 4 and done["skipped"] == 0
    assert any("steps: 20/20" in line for line in lines)
    model = Interpolator.load(file, image_size=32, channels=3)
    assert model.config.base == 8
    assert run_interpolator(cfg, progress=lines.append) == file  # trained: skipped
    assert "skipped" in lines[-1]

    build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
    meta, clips, ada = read_keyframes(layout.keyframes_uri(cfg))
    assert meta["settings"]["interpolator.hash"] == layout.interpolator_hash(cfg)
    linear = cfg_for(tmp_path, data)
    build_keyframes_dataset(linear, use_ray=False, progress=lambda s: None)
    _, clips2, lin = read_keyframes(layout.keyframes_uri(linear))
    assert list(clips["clip"]) == list(clips2["clip"])
    positions = np.stack(clips["keyframe_indices"].map(np.asarray))
    fractional = np.abs(positions - np.round(positions)) > 1e-6
    assert fractional.any()
    # Whole frames are the same pixels; fractional ones are the network's rendering.
    assert np.array_equal(ada[~fractional], lin[~fractional])
    assert not np.array_equal(ada[fractional], lin[fractional])
    # Same settings, same key frames: a rebuild through Ray is skipped.
    assert build_keyframes_dataset(cfg, progress=lambda s: None).get("skipped")
