"""The field's two yardsticks, computed from the key frames the method sees.

- lbp-top: LBP on three orthogonal planes (Zhao & Pietikainen, IEEE TPAMI 29(6), 2007), the
  MEGC2019 baseline (See et al., FG 2019: composite UF1 0.588 on the real composite; that
  figure is theirs, not ours). Each clip's K key frames, grey, form a T x H x W volume; every
  voxel inside it (one voxel from each border) gets an LBP code on its XY, XT and YT plane
  (8 neighbours on a radius-1 circle, bilinear where off the grid, rotation-invariant uniform
  codes: P + 2 = 10 values; scikit-image's `local_binary_pattern(..., "uniform")`), and the
  codes are histogrammed per block of a GRID x GRID grid over the face, per plane,
  normalised to sum 1: 3 x 10 x GRID^2 numbers. A linear SVM (scikit-learn's LinearSVC,
  classes weighted inversely to their frequency) reads them; its C is chosen by grouped
  cross-validation over the training subjects only.
- flow-cnn: optical flow from the onset key frame to the apex key frame (horizontal and
  vertical; OpenCV's Farneback: this OpenCV build has no cv2.optflow, so no TV-L1) and the
  optical strain of that flow, three S x S maps per clip, into a shallow CNN in the style of
  STSTNet (Liong et al., FG 2019; composite UF1 0.735) and OFF-ApexNet (Gan et al., 2019;
  0.720): three parallel 3 x 3 convolutions (3, 5 and 8 channels), max-pool, average-pool,
  one linear layer. A fixed budget (EPOCHS), Adam, class-weighted cross-entropy, seeded:
  each seed trains its own network, so its predictions differ by seed like the method's.
Our implementations, at our sizes (K key frames of S x S, not the published crops); the
published figures are on real data and are quoted beside ours, never as ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import nn

LBP_POINTS = 8
LBP_RADIUS = 1
LBP_BINS = LBP_POINTS + 2  # rotation-invariant uniform codes 0..P, and P + 1 for the rest
SVM_C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class LbpTopSettings:
    grid: int = 4  # blocks per side of the face
    points: int = LBP_POINTS
    radius: int = LBP_RADIUS


@dataclass(frozen=True)
class FlowCnnSettings:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4


def settings_record(name: str) -> dict:
    """The settings that determine a field baseline's predictions (its key)."""
    if name == "lbp-top":
        return {"method": "lbp-top riu2 + LinearSVC", **asdict(LbpTopSettings())}
    if name == "flow-cnn":
        return {
            "method": "farneback onset-apex + strain, STSTNet-style",
            **asdict(FlowCnnSettings()),
        }
    raise ValueError(f"no field baseline named {name!r}")


# ---------------------------------------------------------------------------------- lbp-top


def grey_volume(frames: np.ndarray) -> np.ndarray:
    """K,S,S,C uint8 key frames -> K,S,S uint8 grey (channel mean, rounded: LBP compares
    levels, and float inputs would make ties depend on rounding)."""
    return np.rint(frames.astype(np.float32).mean(axis=-1)).astype(np.uint8)


def lbp_top(volume: np.ndarray, s: LbpTopSettings = LbpTopSettings()) -> np.ndarray:
    """(3 * (P + 2) * grid^2,) LBP-TOP histograms of a T,H,W volume: per block (row-major),
    the XY, XT and YT histograms of the interior voxels' codes, each summing to 1."""
    from skimage.feature import local_binary_pattern

    t, h, w = volume.shape
    r = s.radius
    if min(t, h, w) <= 2 * r:
        raise ValueError(f"a {t}x{h}x{w} volume has no interior voxel at radius {r}")
    p = s.points

    def lbp(img: np.ndarray) -> np.ndarray:
        return local_binary_pattern(np.ascontiguousarray(img), p, r, method="uniform")

    xy = np.stack([lbp(volume[k]) for k in range(t)])  # T,H,W
    xt = np.stack([lbp(volume[:, y, :]) for y in range(h)], axis=1)  # T,H,W (from T,W)
    yt = np.stack([lbp(volume[:, :, x]) for x in range(w)], axis=2)  # T,H,W (from T,H)
    inner = (slice(r, t - r), slice(r, h - r), slice(r, w - r))
    ys = np.linspace(0, h, s.grid + 1).round().astype(int)
    xs = np.linspace(0, w, s.grid + 1).round().astype(int)
    out = []
    for i in range(s.grid):
        for j in range(s.grid):
            for codes in (xy, xt, yt):
                block = codes[inner][
                    :, max(ys[i] - r, 0) : ys[i + 1] - r, max(xs[j] - r, 0) : xs[j + 1] - r
                ]
                hist = np.bincount(block.astype(np.int64).ravel(), minlength=p + 2)[: p + 2]
                out.append(hist / max(hist.sum(), 1))
    return np.concatenate(out).astype(np.float32)


def lbp_top_features(frames: np.ndarray, s: LbpTopSettings = LbpTopSettings()) -> np.ndarray:
    """(N, features) LBP-TOP of every clip's key frames (N,K,S,S,C uint8)."""
    return np.stack([lbp_top(grey_volume(f), s) for f in frames])


def linear_svm(
    x_train: np.ndarray, y_train: np.ndarray, groups: np.ndarray, x_test: np.ndarray, n: int
) -> np.ndarray:
    """One-hot predictions (n_test, n) of a LinearSVC whose C is chosen by grouped CV (macro
    F1) over the training subjects; classes weighted inversely to their frequency."""
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    probs = np.zeros((len(x_test), n))
    if len(np.unique(y_train)) < 2:
        probs[:, np.bincount(y_train, minlength=n).argmax()] = 1.0
        return probs
    model = make_pipeline(StandardScaler(), LinearSVC(class_weight="balanced", max_iter=5000))
    k = min(3, len(np.unique(groups)))
    if k >= 2:
        splits = list(GroupKFold(n_splits=k).split(x_train, y_train, groups))
        grid = {"linearsvc__C": list(SVM_C_GRID)}
        model = GridSearchCV(model, grid, cv=splits, scoring="f1_macro")
    model.fit(x_train, y_train)
    probs[np.arange(len(x_test)), model.predict(x_test)] = 1.0
    return probs


# --------------------------------------------------------------------------------- flow-cnn


def onset_apex_flow(onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
    """3,S,S float32: Farneback flow (u, v) from the onset to the apex grey frame (uint8
    S x S), and its optical strain sqrt(ux^2 + vy^2 + (uy + vx)^2 / 2)."""
    flow = cv2.calcOpticalFlowFarneback(onset, apex, None, 0.5, 2, 5, 3, 5, 1.1, 0)
    u, v = flow[..., 0], flow[..., 1]
    uy, ux = np.gradient(u)
    vy, vx = np.gradient(v)
    strain = np.sqrt(ux**2 + vy**2 + 0.5 * (uy + vx) ** 2)
    return np.stack([u, v, strain]).astype(np.float32)


def flow_inputs(frames: np.ndarray, apex: np.ndarray) -> np.ndarray:
    """(N, 3, S, S): onset_apex_flow of key frame 0 and key frame apex[i] of every clip."""
    grey = np.rint(frames.astype(np.float32).mean(axis=-1)).astype(np.uint8)  # N,K,S,S
    return np.stack([onset_apex_flow(g[0], g[a]) for g, a in zip(grey, apex, strict=True)])


class FlowCNN(nn.Module):
    """STSTNet-style: three parallel 3 x 3 convolutions (3, 5, 8 channels) on the flow and
    strain maps, ReLU, 3 x 3 max-pool (stride 3), 2 x 2 average-pool, one linear layer."""

    def __init__(self, size: int, classes: int = 3) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(3, c, 3, padding=1) for c in (3, 5, 8))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 3, padding=1), nn.AvgPool2d(2, 2))
        side = ((size + 2 - 3) // 3 + 1) // 2
        self.head = nn.Linear(16 * side * side, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([torch.relu(b(x)) for b in self.branches], dim=1)
        return self.head(self.pool(x).flatten(1))


def train_flow_cnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n: int,
    seed: int,
    s: FlowCnnSettings = FlowCnnSettings(),
) -> np.ndarray:
    """Class probabilities (n_test, n) of a FlowCNN trained for s.epochs on the training
    clips (inputs standardised per channel with the training clips' statistics)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std).float()
    xe = torch.from_numpy((x_test - mean) / std).float()
    y = torch.from_numpy(y_train.astype(np.int64))
    counts = np.bincount(y_train, minlength=n).astype(np.float64)
    weight = torch.tensor(np.where(counts > 0, counts.sum() / (n * np.maximum(counts, 1)), 0.0))
    model = FlowCNN(x_train.shape[-1], n)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weight.float())
    model.train()
    for _ in range(s.epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), s.batch_size):
            idx = order[i : i + s.batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(xe), dim=1).double().numpy()
