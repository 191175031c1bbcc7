"""C3D shapes and input checks, freezing by block, backbone transfer, FLOP counting."""

from __future__ import annotations

import pytest
import torch

from mer.errors import ConfigError
from mer.train.models import (
    C3D,
    ClassifierC3D,
    SiameseC3D,
    count_flops,
    freeze,
    load_backbone_state,
)


def test_c3d_full_width_shape():
    torch.manual_seed(0)
    model = C3D().eval()
    # Tran et al.: pool5 output 512 x 1 x 4 x 4 = 8192 feeds fc6 (4096).
    assert model.flat_dim == 8192
    assert model.fc6.in_features == 8192 and model.fc7.out_features == 4096
    with torch.no_grad():
        out = model.features(torch.randn(1, 3, 16, 112, 112))
    assert out.shape == (1, 4096)


@pytest.mark.parametrize("frames,size", [(8, 64), (16, 112), (2, 16), (5, 48)])
def test_c3d_small_width_shapes(frames, size):
    torch.manual_seed(0)
    model = C3D(frames=frames, size=size, width=0.125, batch_norm=True).eval()
    assert [b[0].out_channels for b in model.blocks] == [8, 16, 32, 64, 64]
    with torch.no_grad():
        out = model(torch.randn(2, 3, frames, size, size))
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()


def test_c3d_grayscale_input():
    model = C3D(in_channels=1, frames=8, size=32, width=0.125).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 32, 32)).shape == (1, 512)


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"size": 100}, "size=100"),
        ({"size": 8}, "size=8"),
        ({"frames": 1}, "frames=1"),
        ({"width": 0}, "width=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_c3d_bad_config(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        C3D(**kw)


def test_c3d_rejects_input_of_other_shape():
    model = C3D(frames=8, size=32, width=0.125)
    with pytest.raises(ConfigError, match="expects input"):
        model(torch.randn(1, 3, 16, 32, 32))


def test_siamese_embeddings_are_unit_norm_and_shared():
    torch.manual_seed(0)
    model = SiameseC3D(C3D(frames=8, size=32, width=0.125), embedding_dim=16).eval()
    a, b = torch.randn(3, 3, 8, 32, 32), torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        za, zb = model(a, b)
        assert za.shape == zb.shape == (3, 16)
        torch.testing.assert_close(za.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(za, model.embed(a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(zb, model.embed(b), atol=1e-5, rtol=1e-5)


def test_classifier_logits_shape():
    model = ClassifierC3D(C3D(frames=8, size=32, width=0.125), num_classes=3, hidden=32)
    assert model(torch.randn(2, 3, 8, 32, 32)).shape == (2, 3)
    assert ClassifierC3D(C3D(frames=8, size=32, width=0.125), hidden=None).head.out_features == 3


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Parameters and buffers (BatchNorm running mean/var and num_batches_tracked).
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("depth", [0, 2, 5])
def test_freeze_keeps_first_blocks_unchanged(depth):
    torch.manual_seed(depth)
    model = ClassifierC3D(C3D(frames=8, size=32, width=0.125, batch_norm=True), hidden=16)
    freeze(model, depth)
    model.train()  # must not unfreeze the frozen blocks' norm statistics
    assert [b.training for b in model.backbone.blocks] == [i >= depth for i in range(5)]
    before = _snapshot(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(4, 3, 8, 32, 32), torch.tensor([0, 1, 2, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = _snapshot(model)
    for key, old in before.items():
        frozen = key.startswith("backbone.blocks.") and int(key.split(".")[2]) < depth
        changed = not torch.equal(old, after[key])
        assert changed != frozen, f"{key}: frozen={frozen} but changed={changed}"
    # Running stats exist and were checked (the test would be vacuous without BatchNorm).
    assert any(k.endswith("running_mean") for k in before)


def test_freeze_depth_out_of_range():
    model = C3D(frames=8, size=32, width=0.125)
    for depth in (-1, 6, 2.5):
        with pytest.raises(ConfigError, match="depth"):
            freeze(model, depth)


def test_freeze_again_with_smaller_depth_unfreezes():
    model = C3D(frames=8, size=32, width=0.125, batch_norm=True)
    freeze(model, 4)
    freeze(model, 1)
    model.train()
    grads = [all(p.requires_grad for p in b.parameters()) for b in model.blocks]
    assert grads == [False, True, True, True, True]
    assert [b.training for b in model.blocks] == [False, True, True, True, True]


def test_load_backbone_state_moves_prior_weights():
    torch.manual_seed(0)
    siamese = SiameseC3D(C3D(frames=8, size=32, width=0.125, batch_norm=True))
    classifier = ClassifierC3D(C3D(frames=8, size=32, width=0.125, batch_norm=True))
    state = siamese.state_dict()
    # DDP-wrapped checkpoints carry a "module." prefix; both spellings load.
    load_backbone_state(classifier, {f"module.{k}": v for k, v in state.items()})
    for key, value in siamese.backbone.state_dict().items():
        assert torch.equal(classifier.backbone.state_dict()[key], value), key


def test_load_backbone_state_rejects_other_architecture():
    siamese = SiameseC3D(C3D(frames=8, size=32, width=0.25))
    classifier = ClassifierC3D(C3D(frames=8, size=32, width=0.125))
    with pytest.raises(ConfigError, match="shape"):
        load_backbone_state(classifier, siamese.state_dict())
    with_bn = ClassifierC3D(C3D(frames=8, size=32, width=0.25, batch_norm=True))
    with pytest.raises(ConfigError, match="missing"):
        load_backbone_state(with_bn, siamese.state_dict())


def test_count_flops_matches_hand_count():
    # width 1/64: channels 1,2,4,4,8,8,8,8; fc 64. K=2, S=16.
    model = ClassifierC3D(C3D(frames=2, size=16, width=1 / 64), num_classes=3, hidden=5)
    k3 = 27
    convs = [
        # (c_in, c_out, t, s) at each conv's output
        (3, 1, 2, 16),
        (1, 2, 2, 8),
        (2, 4, 1, 4),
        (4, 4, 1, 4),
        (4, 8, 1, 2),
        (8, 8, 1, 2),
        (8, 8, 1, 1),
        (8, 8, 1, 1),
    ]
    conv = sum(2 * ci * k3 * co * t * s * s for ci, co, t, s in convs)
    fc = 2 * (8 * 1 * 1 * 1 * 64 + 64 * 64 + 64 * 5 + 5 * 3)
    assert count_flops(model, 2, 16) == conv + fc
    siamese = SiameseC3D(C3D(frames=2, size=16, width=1 / 64), embedding_dim=7)
    assert count_flops(siamese, 2, 16) == conv + 2 * (8 * 64 + 64 * 64 + 64 * 7)


def test_count_flops_full_c3d_and_weights_untouched():
    model = C3D(batch_norm=True)
    before = model.blocks[0][1].running_mean.clone()
    # C3D is usually quoted as 38.5 GFLOPs per 16x112x112 clip, counting multiply-adds once.
    assert round(count_flops(model, 16, 112) / 2e9, 1) == 38.5
    assert torch.equal(model.blocks[0][1].running_mean, before)
    assert model.blocks[0][0].weight.device.type == "cpu"


def test_channels_last_placement_keeps_the_numbers():
    """resources.channels_last: weights and 5-D inputs in channels-last-3d, same outputs."""
    import copy

    from mer.train.runtime import Worker, place

    torch.manual_seed(0)
    base = SiameseC3D(C3D(frames=8, size=32, width=0.125), embedding_dim=16).eval()
    cpu = Worker(0, 1, torch.device("cpu"))
    plain = place(copy.deepcopy(base), cpu, channels_last=False)
    fast = place(copy.deepcopy(base), cpu, channels_last=True)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    seen = []
    conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    a, b = torch.randn(2, 3, 8, 32, 32), torch.randn(2, 3, 8, 32, 32)  # NCDHW in
    with torch.no_grad():
        for x, y in zip(plain(a, b), fast(a, b), strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last_3d)
