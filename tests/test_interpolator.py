"""mer.keyframes.interpolator: the separable local convolution, learning on synthetic translations,
exact endpoints, triplet sampling, and one-sentence errors on load."""

from __future__ import annotations

import io
import re

import cv2
import numpy as np
import pytest
import torch

from mer.errors import ConfigError, InputError
from mer.keyframes.interpolator import (
    Interpolator,
    InterpolatorConfig,
    sample_triplets,
    separable_local_conv,
    train_interpolator,
)

# Small enough to train in seconds on one thread: 32 x 32 grey, reach 2 px per frame.
SMALL = InterpolatorConfig(image_size=32, channels=1, kernel_size=5, base=8, levels=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def translating_clips(n: int, seed: int, size: int = 32, frames: int = 6) -> list[np.ndarray]:
    """Smooth random textures moving at a constant velocity of up to 1.5 px per frame in
    each axis (sub-pixel steps; bicubic resampling), grey uint8 (T, size, size, 1)."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        texture = cv2.GaussianBlur(rng.random((size + 32, size + 32), np.float32), (0, 0), 1.0)
        texture = (texture - texture.min()) / np.ptp(texture) * 255
        vx, vy = rng.uniform(-1.5, 1.5, 2)
        clip = [
            cv2.warpAffine(
                texture,
                np.float32([[1, 0, vx * i - 16], [0, 1, vy * i - 16]]),
                (size, size),
                flags=cv2.INTER_CUBIC,
            )
            for i in range(frames)
        ]
        clips.append(np.clip(np.stack(clip) + 0.5, 0, 255).astype(np.uint8)[..., None])
    return clips


def one_sentence(message: str) -> bool:
    return "\n" not in message and len(re.findall(r"[.;] [A-Z]", message)) == 0


def test_separable_local_conv_equals_direct_per_pixel_sum():
    gen = torch.Generator().manual_seed(0)
    b, c, h, w, k = 2, 3, 6, 5, 5
    frame = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)
    kv = torch.randn(b, k, h, w, generator=gen, dtype=torch.float64)
    kh = torch.randn(b, k, h, w, generator=gen, dtype=torch.float64)
    r = k // 2
    f, v, u = frame.numpy(), kv.numpy(), kh.numpy()
    expected = np.zeros((b, c, h, w))
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for i in range(k):
                    for j in range(k):
                        yy, xx = min(max(y + i - r, 0), h - 1), min(max(x + j - r, 0), w - 1)
                        expected[n, :, y, x] += v[n, i, y, x] * u[n, j, y, x] * f[n, :, yy, xx]
    np.testing.assert_allclose(separable_local_conv(frame, kv, kh).numpy(), expected, atol=1e-12)


def test_sample_triplets_targets_sit_at_t():
    # Frame i of a clip is filled with 10 * i, so a target's value says where it came from.
    clips = [np.repeat(10 * np.arange(9, dtype=np.uint8), 8).reshape(9, 2, 4, 1)]
    batch = sample_triplets(clips * 2, 200, np.random.default_rng(0), max_gap=4)
    a, b, target = (x[:, 0, 0, 0] * 255 for x in batch[:3])
    gap = (b - a).abs()
    assert ((gap >= 19.9) & (gap <= 40.1)).all()  # gaps 2..4 frames
    assert ((batch.t > 0) & (batch.t < 1)).all()
    np.testing.assert_allclose(target.numpy(), (a + batch.t * (b - a)).numpy(), atol=1e-3)
    assert (b < a).any() and (b > a).any()  # both directions in time


def test_untrained_model_is_the_linear_blend():
    torch.manual_seed(0)
    a, b = translating_clips(1, seed=3)[0][[0, 2]]
    blend = np.clip(0.7 * a.astype(np.float32) + 0.3 * b + 0.5, 0, 255).astype(np.uint8)
    out = Interpolator(SMALL).interpolate(a, b, 0.3)
    assert np.abs(out.astype(int) - blend).max() <= 1


@pytest.fixture(scope="module")
def trained() -> Interpolator:
    # Measured when written: held-out MSE 0.51 x the blend's (seeds 1-3: 0.52, 0.40, 0.53).
    return train_interpolator(
        translating_clips(64, seed=0), SMALL, steps=200, batch_size=8, lr=1e-3, max_gap=2
    )


def test_trained_model_beats_linear_blend_on_held_out_clips(trained):
    batch = sample_triplets(translating_clips(16, seed=1), 256, np.random.default_rng(2), 2)
    t = batch.t.view(-1, 1, 1, 1)
    with torch.no_grad():
        learned = trained(batch.frame0, batch.frame1, batch.t).clamp(0, 1)
    blend = (1 - t) * batch.frame0 + t * batch.frame1
    mse_learned = float(((learned - batch.target) ** 2).mean())
    mse_blend = float(((blend - batch.target) ** 2).mean())
    assert mse_learned < 0.85 * mse_blend, (mse_learned, mse_blend)


def test_endpoints_are_returned_exactly(trained):
    a, b = translating_clips(1, seed=5)[0][[1, 3]]
    assert np.array_equal(trained.interpolate(a, b, 0.0), a)
    assert np.array_equal(trained.interpolate(a, b, 1.0), b)
    both = trained.interpolate(np.stack([a, a]), np.stack([b, b]), np.array([0.0, 1.0]))
    assert np.array_equal(both, np.stack([a, b]))
    middle = trained.interpolate(a, b, 0.5)
    assert middle.shape == a.shape and middle.dtype == np.uint8


def test_save_load_round_trip(tmp_path, trained):
    uri = str(tmp_path / "interpolator" / "model.pt")
    trained.save(uri)
    loaded = Interpolator.load(uri, image_size=32, channels=1)
    assert loaded.config == trained.config
    a, b = translating_clips(1, seed=6)[0][[0, 2]]
    assert np.array_equal(loaded.interpolate(a, b, 0.4), trained.interpolate(a, b, 0.4))


def test_load_missing_file_is_one_sentence(tmp_path):
    uri = str(tmp_path / "nowhere" / "model.pt")
    with pytest.raises(InputError, match="no interpolator checkpoint") as info:
        Interpolator.load(uri)
    assert uri in str(info.value) and one_sentence(str(info.value))


def test_load_for_other_key_frames_is_refused(tmp_path):
    uri = str(tmp_path / "model.pt")
    Interpolator(SMALL).save(uri)
    for size, channels in ((112, 1), (32, 3)):
        with pytest.raises(ConfigError, match="trained on 32 px frames with 1 channel") as info:
            Interpolator.load(uri, image_size=size, channels=channels)
        assert uri in str(info.value) and one_sentence(str(info.value))
    with pytest.raises(ConfigError, match="trained on 32x32x1"):
        Interpolator.load(uri).interpolate(
            np.zeros((64, 64, 1), np.uint8), np.zeros((64, 64, 1), np.uint8), 0.5
        )


def test_load_mismatched_or_foreign_checkpoint_is_one_sentence(tmp_path):
    # Weights of a kernel-5 model under a config that says kernel 7.
    state = Interpolator(SMALL).state_dict()
    config = {**vars(SMALL), "kernel_size": 7}
    buf = io.BytesIO()
    torch.save(
        {"format": "mer.keyframes.interpolator/1", "config": config, "state_dict": state}, buf
    )
    mismatched = tmp_path / "mismatched.pt"
    mismatched.write_bytes(buf.getvalue())
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    for path, needle in ((mismatched, "do not fit its config"), (foreign, "is not a")):
        with pytest.raises(InputError, match=needle) as info:
            Interpolator.load(str(path))
        assert str(path) in str(info.value) and one_sentence(str(info.value))
