"""The learned spotter: a small temporal network on windows of a video's features, trained
leave-one-subject-out on Ray Train.

Input per frame: the two-sided motion curve and the grid of MDMD block features
(mer.spotting.windows), each divided by its median over the video (videos differ in
texture and noise) and log-compressed, resampled to `rate` frames per second so that 30 and
200 fps videos look alike to the network. The network (`SpotNet`): four 1-D convolutions,
dilated 1, 2, 4, 8 (a receptive field of about 2 s at 30 fps), and a per-step logit of "inside
a micro-expression". It is trained on random crops of `crop` steps from the training
subjects' videos (binary cross-entropy, positives weighted by their rarity).

One Ray Train run trains every fold in turn (one trainer start for all folds: a start costs
more than a fold's training here), data-parallel over its workers (`train_fold`); the chief
worker writes each fold's weights to `<out>/fold-<subject>.pt`. The driver then scores the
fold's training videos, chooses the probability threshold (and, for the peaks rule, the
interval length) with the best micro F1 there (mer.spotting.spotters.choose, absolute
threshold), and spots the test subject with it. A fold's network and settings never see its
test subject's intervals.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mer import storage
from mer.datasets.long_videos import Interval
from mer.spotting.peaks import PeakSettings
from mer.spotting.spotters import FINAL, FoldResult, choose, spot
from mer.spotting.stage import VideoFeatures
from mer.train import runtime
from mer.train.runtime import set_threads

PROB_GRID = tuple(np.round(np.linspace(0.1, 0.9, 17), 2).tolist())


@dataclass(frozen=True)
class LearnedSettings:
    rate: float = 30.0  # steps per second the network sees
    hidden: int = 32
    epochs: int = 40  # passes over the training crops, per fold
    crop: int = 64  # steps per training crop
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0


class SpotNet(nn.Module):
    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for d in (1, 2, 4, 8):
            layers += [nn.Conv1d(width, hidden, 3, padding=d, dilation=d), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv1d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, T)
        return self.head(self.body(x))[:, 0]


def inputs(f: VideoFeatures, rate: float) -> np.ndarray:
    """float32 (C, steps): the normalised features resampled to `rate`."""
    x = np.concatenate([f.motion[:, None], f.blocks], axis=1).astype(np.float64)
    x = np.log1p(x / (np.median(x, axis=0) + 1e-6))
    return _resample(x, f.fps, rate).T.astype(np.float32)


def targets(f: VideoFeatures, truth: list[Interval], rate: float) -> np.ndarray:
    """float32 (steps,): 1 inside the video's micro-expressions."""
    mask = np.zeros(f.n_frames)
    for t in truth:
        if t.video == f.video and t.type == "micro":
            mask[t.onset - f.first_frame : t.offset - f.first_frame + 1] = 1
    return (_resample(mask[:, None], f.fps, rate)[:, 0] > 0.5).astype(np.float32)


def _resample(x: np.ndarray, fps: float, rate: float) -> np.ndarray:
    n = len(x)
    grid = np.arange(0, n / fps, 1 / rate) * fps
    grid = grid[grid <= n - 1] if n > 1 else np.zeros(1)
    return np.stack([np.interp(grid, np.arange(n), x[:, k]) for k in range(x.shape[1])], axis=1)


def frame_scores(model: SpotNet, f: VideoFeatures, rate: float) -> np.ndarray:
    """Per frame of the video, the network's probability of a micro-expression."""
    x = torch.from_numpy(inputs(f, rate))[None]
    with torch.no_grad():
        p = torch.sigmoid(model(x))[0].numpy().astype(np.float64)
    steps = np.arange(len(p)) * f.fps / rate
    return np.interp(np.arange(f.n_frames), steps, p)


def train_fold(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    ls: LearnedSettings,
    seed: int,
    worker: runtime.Worker | None = None,
) -> tuple[SpotNet, float]:
    """One fold's network, trained on these videos' (inputs, targets); its last loss.

    With a `worker` of a run of several (a Ray Train worker), data-parallel: every worker
    starts from the same weights, draws its own share of each batch of `ls.batch` crops
    (its own random stream) and DDP averages the gradients, so every worker ends with the
    same network, trained on the whole batch. Alone, the crops come from `seed` itself."""
    w = worker or runtime.Worker(0, 1, torch.device("cpu"))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed if w.world == 1 else [seed, w.rank])
    model = SpotNet(xs[0].shape[0], ls.hidden)
    ddp, forward = runtime.set_up(model, w, channels_last=False)
    opt = torch.optim.Adam(ddp.parameters(), lr=ls.lr)
    share = worker_share(ls.batch, w)
    pos = float(sum(y.sum() for y in ys))
    total = float(sum(len(y) for y in ys))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(max(1.0, (total - pos) / max(pos, 1.0))))
    steps_per_epoch = max(1, int(total // (ls.crop * ls.batch)))
    loss = torch.zeros(())
    for _ in range(ls.epochs):
        for _ in range(steps_per_epoch):
            bx, by = [], []
            for _ in range(share):
                v = int(rng.integers(len(xs)))
                n = xs[v].shape[1]
                c = min(ls.crop, n)
                a = int(rng.integers(0, n - c + 1))
                bx.append(_pad(xs[v][:, a : a + c], ls.crop))
                by.append(_pad(ys[v][None, a : a + c], ls.crop)[0])
            x, y = torch.from_numpy(np.stack(bx)), torch.from_numpy(np.stack(by))
            loss = loss_fn(forward(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, runtime.mean_over_workers({"loss": float(loss.detach())}, w)["loss"]


def worker_share(batch: int, w: runtime.Worker) -> int:
    """Crops of a batch of `batch` this worker draws: the batch split over the workers, the
    first `batch % world` taking one more; at least one each (a batch smaller than the
    workers grows to one crop per worker)."""
    return max(1, batch // w.world + (w.rank < batch % w.world))


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (0, n - a.shape[1]))) if a.shape[1] < n else a


def _loop(config: dict) -> None:
    """Ray Train worker loop: every fold in turn, data-parallel over the run's workers
    (train_fold); the chief writes each fold's weights."""
    import ray.train

    set_threads(config["cpus"])
    ls = LearnedSettings(**config["settings"])
    w = runtime.ray_worker()
    w = runtime.Worker(w.rank, w.world, torch.device("cpu"))  # a small 1-D network: CPU
    for fold in config["folds"]:
        xs = [config["x"][n] for n in fold["train"]]
        ys = [config["y"][n] for n in fold["train"]]
        model, loss = train_fold(xs, ys, ls, ls.seed, w)
        if w.is_chief:
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            storage.write_bytes(fold["file"], buf.getvalue())
        ray.train.report({"fold": fold["subject"], "loss": loss})


def fold_file(out: str, subject: str) -> str:
    return storage.join(out, f"fold-{subject}.pt")


def fold_plan(feats: dict[str, VideoFeatures], out: str) -> list[dict]:
    """Each subject's fold (trained on the other subjects' videos), and FINAL (every
    subject: the network new videos are spotted with), with the file its weights go to."""
    subjects = sorted({f.subject for f in feats.values()})
    return [
        {
            "subject": s,
            "train": sorted(n for n, f in feats.items() if f.subject != s),
            "file": fold_file(out, s),
        }
        for s in [*subjects, FINAL]
    ]


def train_loso(
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ls: LearnedSettings,
    out: str,
    resources,
    use_ray: bool = True,
) -> None:
    """Train every fold's network (folds whose weights are in `out` already are skipped).

    Folds run one after another in one Ray Train run (`resources.workers` workers, each with
    `resources.cpus_per_worker` CPUs, 1 when 0); `use_ray=False` trains in this process."""
    folds = [f for f in fold_plan(feats, out) if not storage.exists(f["file"])]
    if not folds:
        return
    x = {n: inputs(f, ls.rate) for n, f in feats.items()}
    y = {n: targets(f, truth, ls.rate) for n, f in feats.items()}
    cpus = resources.cpus_per_worker or 1.0
    config = {"folds": folds, "x": x, "y": y, "settings": dataclasses.asdict(ls), "cpus": cpus}
    if not use_ray:
        for fold in folds:
            model, _ = train_fold(
                [x[n] for n in fold["train"]], [y[n] for n in fold["train"]], ls, ls.seed
            )
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            storage.write_bytes(fold["file"], buf.getvalue())
        return

    trainer = runtime.make_trainer(
        _loop,
        config,
        dataclasses.replace(resources, cpus_per_worker=cpus, gpus_per_worker=0.0),
        storage.join(out, "_runs"),
        "learned",
    )
    runtime.fit(trainer)


def load_fold(out: str, subject: str, n_inputs: int, ls: LearnedSettings) -> SpotNet:
    model = SpotNet(n_inputs, ls.hidden)
    state = torch.load(io.BytesIO(storage.read_bytes(fold_file(out, subject))), weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def loso_learned(
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ps: PeakSettings,
    ls: LearnedSettings,
    out: str,
    resources,
    use_ray: bool = True,
) -> list[FoldResult]:
    """The learned spotter on every leave-one-subject-out fold (see the module), and last the
    FINAL fold: the network trained on every subject and its threshold (no intervals)."""
    train_loso(feats, truth, ls, out, resources, use_ray=use_ray)
    n_inputs = 1 + next(iter(feats.values())).blocks.shape[1]
    results = []
    for subject in sorted({f.subject for f in feats.values()}):
        model = load_fold(out, subject, n_inputs, ls)
        scores = {n: frame_scores(model, f, ls.rate) for n, f in feats.items()}
        train = {n: s for n, s in scores.items() if feats[n].subject != subject}
        test = {n: s for n, s in scores.items() if feats[n].subject == subject}
        c = choose(train, feats, truth, ps, PROB_GRID, relative=False)
        found = spot(test, feats, c.threshold, ps, relative=False, length_s=c.length_s)
        results.append(FoldResult("learned", subject, c.threshold, c.train_f1, found, c.length_s))
    model = load_fold(out, FINAL, n_inputs, ls)
    scores = {n: frame_scores(model, f, ls.rate) for n, f in feats.items()}
    c = choose(scores, feats, truth, ps, PROB_GRID, relative=False)
    results.append(FoldResult("learned", FINAL, c.threshold, c.train_f1, [], c.length_s))
    return results
