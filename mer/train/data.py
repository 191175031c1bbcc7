"""Training data on a worker: tensors, augmentation, pair sampling, batch order and RNG.

Each worker reads the (small) key-frame table itself (mer.keyframes.table.load_table) and indexes it
per fold: the MEGC2019 composite at K=16, S=112 is about 270 MB of uint8, and a local read
beats streaming Ray Data shards for a table that small (benchmarks/README.md has the numbers).
"""

from __future__ import annotations

import numpy as np
import torch


class Frames:
    """A key-frame array where batches are taken: the host's numpy array, or (`on_device`)
    one copy on the training device, indexed there, so no batch crosses the bus."""

    def __init__(self, frames: np.ndarray, device: torch.device, on_device: bool) -> None:
        self.device = device
        self.on_device = on_device
        self.frames = (
            torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(device)
            if (on_device)
            else frames
        )

    def __getitem__(self, idx: np.ndarray):
        if self.on_device:
            return self.frames[torch.as_tensor(idx, device=self.device)]
        return self.frames[idx]

    @classmethod
    def of(cls, frames: np.ndarray, device: torch.device, on_device: bool) -> Frames:
        """One per array, device and placement in this process (a table is copied once)."""
        key = (id(frames), str(device), on_device)
        if key not in _FRAMES:
            _FRAMES.clear()  # one table at a time on a device
            _FRAMES[key] = cls(frames, device, on_device)
        return _FRAMES[key]


_FRAMES: dict[tuple, Frames] = {}


DELTA_GAIN = 8.0  # a 1-level change becomes 8/255: micro-movements are a few levels


def to_tensor(frames, device=None, input: str = "frames") -> torch.Tensor:
    """uint8 B,K,S,S,C (numpy, or a torch tensor already on its device) -> float32
    B,C,K,S,S in [-1, 1].

    input "frames": the key frames themselves (as in C3D and the paper).
    input "delta": each key frame minus the clip's first (onset) key frame, amplified; our
    option for small data, where learning sub-pixel motion from raw frames is hard.
    """
    if isinstance(frames, torch.Tensor):
        x = frames.to(device) if device is not None else frames
    else:
        x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(device)
    return normalise(x.permute(0, 4, 1, 2, 3).float(), input)


def normalise(x: torch.Tensor, input: str) -> torch.Tensor:
    """float32 key frames B,C,K,S,S (0..255) -> the model's input in [-1, 1]: the one
    normalisation, used in training, evaluation and the model folder's portable program."""
    if input == "delta":
        return ((x - x[:, :, :1]) * (DELTA_GAIN / 255.0)).clamp(-1.0, 1.0)
    return x / 127.5 - 1.0


def describe_normalisation(input: str) -> str:
    """`normalise` in words, for the model card."""
    if input == "delta":
        return (
            f"x = clamp((frame_k - frame_0) * {DELTA_GAIN:g} / 255, -1, 1) per channel, where "
            "frame_0 is the first (onset) key frame"
        )
    return "x = frame / 127.5 - 1 (values in [-1, 1])"


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip, small crop/scale and brightness, the same for every frame of a clip.

    Motion is the signal, so each transform is constant over time: it changes how the face
    looks, never how it moves.
    """
    b, _, k, s, _ = x.shape
    out = x.clone()
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    scale = 0.85 + 0.15 * torch.rand(b, generator=generator)
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * (1 - scale[:, None])
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    theta = theta.to(x.device)
    flat = out.permute(0, 2, 1, 3, 4).reshape(b * k, -1, s, s)
    grid = torch.nn.functional.affine_grid(
        theta.repeat_interleave(k, 0), list(flat.shape), align_corners=False
    )
    flat = torch.nn.functional.grid_sample(flat, grid, align_corners=False, padding_mode="border")
    out = flat.reshape(b, k, -1, s, s).permute(0, 2, 1, 3, 4)
    bright = ((torch.rand(b, generator=generator) * 2 - 1) * 0.1).to(x.device)
    return (out + bright[:, None, None, None, None]).clamp_(-1, 1)


def sample_pairs(
    labels: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced clip pairs over positions 0..len(labels)-1: (a, b, same).

    Half the pairs share a class, half do not (as far as the classes allow); a pair never
    uses the same clip twice. Callers pass the labels of the training clips only.
    """
    labels = np.asarray(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    same_ok = [c for c, ix in by_class.items() if len(ix) >= 2]
    diff_ok = len(by_class) >= 2
    if not same_ok and not diff_ok:
        raise ValueError("pair sampling needs at least two training clips")
    a, b, same = [], [], []
    for n in range(n_pairs):
        want_same = (n % 2 == 0 and same_ok) or not diff_ok
        if want_same:
            c = same_ok[rng.integers(len(same_ok))]
            i, j = rng.choice(by_class[c], size=2, replace=False)
        else:
            c1, c2 = rng.choice(list(by_class), size=2, replace=False)
            i, j = rng.choice(by_class[c1]), rng.choice(by_class[c2])
        a.append(i)
        b.append(j)
        same.append(1.0 if want_same else 0.0)
    order = rng.permutation(n_pairs)
    return np.asarray(a)[order], np.asarray(b)[order], np.asarray(same, dtype=np.float32)[order]


def sample_episodes(
    labels: np.ndarray, subjects: np.ndarray, n_episodes: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_episodes, size) positions over 0..len(labels)-1 for episodic prior learning.

    An episode holds every class about equally (size // classes clips each, the remainder to
    random classes), each class's clips drawn from as many different subjects as it has:
    subjects in a fresh random order, one clip each, round-robin (a subject gives a class
    a second clip only after every subject of that class gave one). So the pairs an episode
    forms (mer.train.losses.EpisodeContrastiveLoss) cross subjects wherever the data allows, and a
    class's clips are never mostly one person's. Few-shot learning's episodes (Vinyals et
    al. 2016; Snell et al. 2017) are the inspiration: a balanced N-way set per step, every
    pair inside it used.
    """
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    classes = np.unique(labels)
    if len(labels) < 2:
        raise ValueError("episodes need at least two training clips")
    by_class = {
        c: {
            s: np.flatnonzero((labels == c) & (subjects == s))
            for s in np.unique(subjects[labels == c])
        }
        for c in classes
    }
    out = np.empty((n_episodes, size), dtype=np.int64)
    for e in range(n_episodes):
        counts = np.full(len(classes), size // len(classes))
        counts[rng.choice(len(classes), size % len(classes), replace=False)] += 1
        picks = []
        for c, n in zip(classes, counts, strict=True):
            groups = by_class[c]
            order = rng.permutation(list(groups))
            taken = 0
            while taken < n:  # round-robin over the class's subjects in a random order
                for s in order[: n - taken]:
                    picks.append(rng.choice(groups[s]))
                taken += min(n - taken, len(order))
        out[e] = rng.permutation(np.asarray(picks))
    return out


def balanced_order(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n positions drawn with probability inversely proportional to class frequency."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    w = 1.0 / counts[labels]
    return rng.choice(len(labels), size=n, replace=True, p=w / w.sum())


def shard(order: np.ndarray, rank: int, world: int, batch_size: int) -> list[np.ndarray]:
    """This rank's batches of a global order; every rank gets the same number of steps."""
    per_rank = len(order) // world
    mine = order[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def epoch_rng(seed: int, index: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    """The numpy and torch generators of one epoch of run `index` (order, pairs, augmentation):
    seeded from (seed, index, epoch) alone, so a resumed run repeats them exactly."""
    rng = np.random.default_rng([seed, index, epoch])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**31)))
