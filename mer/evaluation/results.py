"""Query a search experiment: leaderboard with seeds and intervals, baselines, paired
comparisons, per-fold detail, the nested estimate (rendered by mer.evaluation.results_report).

Everything is recomputed from the saved per-clip predictions (configs/<id>/seed-<s>/*.parquet
and baselines/<name>/seed-<s>/*.parquet), so the numbers can be checked independently and
read while the search still runs. A score is the pooled LOSO metric (MEGC2019) at each seed,
reported as mean and SD over seeds with a 95 % subject-level bootstrap interval
(mer.evaluation.stats). Complete configurations are ranked by mean UF1; those whose interval overlaps
the top one's are marked tied, and none is called best: with a few dozen subjects the
intervals are wide. Two protocols are reported, and every output names its own:
  loso-search  pooled LOSO score of each configuration. Choosing a configuration by this
               score picks hyperparameters on the very folds it reports: optimistic.
  nested-loso  for each held-out subject, the configuration is chosen on inner folds of the
               other subjects only; the pooled score of those choices is an honest estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mer import layout, provenance, storage
from mer.datasets import CLASSES_3
from mer.errors import InputError
from mer.evaluation import stats
from mer.layout import read_predictions
from mer.metrics import per_class_f1, summarise

SEARCH_NOTE = (
    "loso-search: hyperparameters chosen on the same folds that are scored (optimistic); "
    "see nested-loso for the honest estimate"
)
STAT_NOTE = (
    "mean +- SD over seeds of the pooled score; [95 % interval] from a subject-level "
    "bootstrap (BCa); 'tied': interval overlaps the top configuration's"
)


@dataclass
class Experiment:
    uri: str
    meta: dict
    params: dict  # entry id -> parameters (a configuration's, or {"baseline": name})
    predictions: pd.DataFrame  # every unit of every entry, with config_id and seed
    kinds: dict = field(default_factory=dict)  # entry id -> "method" | "baseline"
    scores: dict = field(default_factory=dict, repr=False)  # entry_scores, computed once

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 3))

    @property
    def class_names(self) -> list[str]:
        return (
            list(CLASSES_3) if self.num_classes == 3 else [str(c) for c in range(self.num_classes)]
        )

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.meta.get("seeds", [0])]

    def outer(self, entry: str) -> pd.DataFrame:
        p = self.predictions
        return p[(p["config_id"] == entry) & (p["kind"] == "outer")]


def resolve(experiment: str, root: str | None = None) -> str:
    """An experiment URI, or a name under `<root>/tune/`."""
    if root and "/" not in experiment:
        return storage.join(root, "tune", experiment)
    return experiment


def load_experiment(uri: str) -> Experiment:
    meta_uri = storage.join(uri, "_experiment.json")
    if not storage.exists(meta_uri):
        raise InputError(
            f"{uri}: no search experiment here (a search writes _experiment.json when it "
            "starts: run python jobs/tune.py --config <its config>, or jobs/pipeline.py)"
        )
    meta = storage.read_json(meta_uri)
    params, kinds, frames = {}, {}, []
    for cid in storage.listdir(storage.join(uri, "configs")):
        pu = storage.join(layout.config_dir(uri, cid), "params.json")
        if storage.exists(pu):
            params[cid], kinds[cid] = storage.read_json(pu), "method"
            frames.append(read_predictions(layout.config_dir(uri, cid)).assign(config_id=cid))
    for name in storage.listdir(storage.join(uri, "baselines")):
        params[name], kinds[name] = {"baseline": name}, "baseline"
        frames.append(read_predictions(layout.baseline_dir(uri, name)).assign(config_id=name))
    frames = [f for f in frames if len(f)]
    preds = (
        pd.concat(frames, ignore_index=True)
        if frames
        else read_predictions(storage.join(uri, "configs")).assign(config_id="")
    )
    return Experiment(uri=uri, meta=meta, params=params, predictions=preds, kinds=kinds)


# ---------------------------------------------------------------- scores


def _subjects(p: pd.DataFrame) -> list[str]:
    return sorted(set((p["dataset"].astype(str) + "/" + p["subject"].astype(str)).tolist()))


def entry_scores(exp: Experiment, entry: str) -> dict:
    """One entry's scores: per seed, mean/SD over seeds, bootstrap intervals, completeness."""
    if entry not in exp.scores:
        exp.scores[entry] = _entry_scores(exp, entry)
    return exp.scores[entry]


def _entry_scores(exp: Experiment, entry: str) -> dict:
    p = exp.outer(entry)
    folds_total = len(exp.meta.get("folds", []))
    per_seed = []
    for seed in exp.seeds:
        ps = p[p["seed"] == seed]
        row = {"seed": seed, "folds_done": int(ps["run"].nunique()) if len(ps) else 0}
        if len(ps):
            s = summarise(ps, exp.num_classes)
            row.update(uf1=s["uf1"], uar=s["uar"], accuracy=s["accuracy"])
            row["f1"] = per_class_f1(np.asarray(s["confusion"]))
        per_seed.append(row)
    done = [r for r in per_seed if r["folds_done"]]
    complete = len(done) == len(exp.seeds) and all(r["folds_done"] == folds_total for r in done)
    out = {
        "config_id": entry,
        "kind": exp.kinds.get(entry, "method"),
        "status": "complete" if complete else "partial",
        "seeds_done": sum(1 for r in per_seed if r["folds_done"] == folds_total),
        "folds_done": min((r["folds_done"] for r in per_seed), default=0),
        "folds_total": folds_total,
        "per_seed": per_seed,
    }
    if not done:
        return out
    out["clips"] = int(len(p) // len(done))  # held-out clips per seed
    for metric in ("uf1", "uar", "accuracy"):
        values = np.array([r[metric] for r in done])
        out[metric] = float(values.mean())
        out[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    if complete:
        seeds = [r["seed"] for r in done]
        cms = stats.subject_confusions(p, seeds, _subjects(p), exp.num_classes)
        for metric in ("uf1", "uar"):
            lo, hi, method = stats.interval_method(cms, metric)
            out[f"{metric}_lo"], out[f"{metric}_hi"] = lo, hi
            out[f"{metric}_interval"] = method
    # F1 of each class, mean over seeds (UF1 is their mean).
    for c, name in enumerate(exp.class_names):
        out[f"f1[{name}]"] = float(np.mean([r["f1"][c] for r in done]))
    for name, g in p.groupby("dataset", sort=True):
        vals = [summarise(gs, exp.num_classes)["uf1"] for _, gs in g.groupby("seed") if len(gs)]
        out[f"uf1[{name}]"] = float(np.mean(vals))
    if "seconds" in p:
        all_runs = exp.predictions[exp.predictions["config_id"] == entry]
        out["wall_time_s"] = float(all_runs.groupby(["seed", "run"])["seconds"].first().sum())
    return out


def leaderboard(exp: Experiment) -> pd.DataFrame:
    """One row per entry: complete configurations ranked by mean UF1 (baselines beside them,
    unranked), then partial ones, which are never ranked."""
    rows = []
    for entry, params in exp.params.items():
        s = entry_scores(exp, entry)
        flat = {k: v for k, v in s.items() if k != "per_seed"}
        rows.append({**flat, **({} if s["kind"] == "baseline" else params)})
    board = pd.DataFrame(rows)
    if not len(board):
        return board
    for col in ("uf1", "uf1_lo", "uf1_hi"):
        if col not in board:
            board[col] = np.nan
    ranked = (board["status"] == "complete") & (board["kind"] == "method")
    board["rank"] = pd.NA
    order = board[ranked].sort_values(["uf1", "config_id"], ascending=[False, True]).index
    board.loc[order, "rank"] = range(1, len(order) + 1)
    board["standing"] = ""
    if len(order):
        top = board.loc[order[0]]
        overlaps = (board["uf1_lo"] <= top["uf1_hi"]) & (board["uf1_hi"] >= top["uf1_lo"])
        board.loc[ranked & overlaps, "standing"] = "tied"
        board.loc[ranked & ~overlaps, "standing"] = "below"
        board.loc[order[0], "standing"] = "top"
    board["_group"] = np.where(
        board["status"] != "complete", 2, np.where(board["kind"] == "baseline", 1, 0)
    )
    board = board.sort_values(["_group", "uf1", "config_id"], ascending=[True, False, True])
    board.insert(0, "protocol", "loso-search")
    return board.drop(columns="_group").reset_index(drop=True)


def label(exp: Experiment, entry: str) -> str:
    """An entry as people read it: its searched settings (gamma=2.0 freeze=1) and its id, or
    'baseline: <name>'."""
    if exp.kinds.get(entry) == "baseline":
        return f"baseline: {entry}"
    params = exp.params.get(entry, {})
    keys = list(exp.meta.get("space") or params)
    # Settings every configuration shares say nothing about this one: named only if all do.
    methods = [p for e, p in exp.params.items() if exp.kinds.get(e) != "baseline"]
    varying = [k for k in keys if len({repr(p.get(k)) for p in methods}) > 1]
    return " ".join(f"{k}={_short(params.get(k))}" for k in varying or keys) + f" ({entry})"


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def top_config(exp: Experiment) -> str | None:
    board = leaderboard(exp)
    if not len(board) or not (board["standing"] == "top").any():
        return None
    return str(board.loc[board["standing"] == "top", "config_id"].iloc[0])


def fold_detail(exp: Experiment, config_id: str) -> pd.DataFrame:
    """Per fold run and seed of one entry: clips, UF1/UAR/accuracy on that fold, epochs, time."""
    if config_id not in exp.params:
        raise InputError(f"{exp.uri}: no configuration {config_id!r} (known: {sorted(exp.params)})")
    p = exp.predictions[exp.predictions["config_id"] == config_id]
    rows = []
    for (seed, run), g in p.groupby(["seed", "run"], sort=True):
        s = summarise(g, exp.num_classes)
        rows.append(
            {
                "seed": int(seed),
                "run": run,
                "kind": g["kind"].iloc[0],
                "clips": s["n"],
                "uf1": s["uf1"],
                "uar": s["uar"],
                "accuracy": s["accuracy"],
                "epochs": int(g["epochs"].iloc[0])
                if "epochs" in g and g["epochs"].notna().all()
                else None,
                "seconds": float(g["seconds"].iloc[0])
                if "seconds" in g and g["seconds"].notna().all()
                else None,
            }
        )
    return pd.DataFrame(rows)


def nested(exp: Experiment) -> dict:
    """Honest estimate: per outer fold, pick the configuration by its inner-fold UF1 (mean
    over seeds) only, then score the chosen configurations' outer predictions."""
    if exp.meta.get("protocol") != "nested":
        raise InputError(f"{exp.uri}: experiment was not run with search.protocol=nested")
    preds = exp.predictions[exp.predictions["config_id"].map(exp.kinds.get) == "method"]
    inner_all = preds[preds["kind"] == "inner"]
    inner_runs = exp.meta.get("inner_runs", {})
    seeds = exp.seeds
    label = (
        "nested-loso"
        if exp.meta.get("inner_prior", "own") == "own"
        else "nested-loso (inner runs reuse the outer fold's prior, which saw the inner "
        "validation subjects: optimistic)"
    )
    choices, chosen = [], []
    for fold in exp.meta["folds"]:
        inner = inner_all[inner_all["outer"] == fold]
        outer = preds[(preds["kind"] == "outer") & (preds["run"] == fold)]
        scores = {}
        for cid, g in inner.groupby("config_id"):
            o = outer[outer["config_id"] == cid]
            expected = len(inner_runs.get(fold, [])) or g["run"].nunique()
            if g.groupby("seed")["run"].nunique().reindex(seeds).fillna(0).min() < expected:
                continue  # inner runs not all done
            if o["seed"].nunique() < len(seeds):
                continue  # outer run not done at every seed
            scores[cid] = float(
                np.mean([summarise(gs, exp.num_classes)["uf1"] for _, gs in g.groupby("seed")])
            )
        if not scores:
            continue
        best = max(sorted(scores), key=lambda c: scores[c])
        choices.append(
            {
                "fold": fold,
                "config_id": best,
                "inner_uf1": scores[best],
                "inner_subjects": _subjects(inner),
            }
        )
        chosen.append(outer[outer["config_id"] == best])
    out = {"protocol": label, "folds_done": len(choices), "folds_total": len(exp.meta["folds"])}
    out["choices"] = choices
    if not chosen:
        return out
    p = pd.concat(chosen, ignore_index=True)
    per_seed = [summarise(p[p["seed"] == s], exp.num_classes) for s in seeds]
    for metric in ("uf1", "uar", "accuracy"):
        values = np.array([s[metric] for s in per_seed])
        out[metric] = float(values.mean())
        out[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    out["per_seed"] = [
        {"seed": seed, "uf1": s["uf1"], "uar": s["uar"]}
        for seed, s in zip(seeds, per_seed, strict=True)
    ]
    cms = stats.subject_confusions(p, seeds, _subjects(p), exp.num_classes)
    for metric in ("uf1", "uar"):
        out[f"{metric}_lo"], out[f"{metric}_hi"] = stats.interval(cms, metric)
    return out


# ---------------------------------------------------------------- paired comparison


def provenance_of(exp: Experiment, entry: str) -> dict:
    """The code, platform and thread count an entry's outer predictions were made with
    (mer.provenance); a baseline's thread count is not checked (it always runs on one)."""
    checked = provenance.CHECKED
    if exp.kinds.get(entry) == "baseline":
        checked = tuple(c for c in checked if c != "threads")
    return provenance.of_predictions(exp.outer(entry), checked)


def provenance_rows(exp: Experiment) -> dict:
    """{entry: provenance_of(entry)} over the entries with predictions."""
    have = set(exp.predictions["config_id"]) if len(exp.predictions) else set()
    return {e: provenance_of(exp, e) for e in exp.params if e in have}


def check_provenance(exp: Experiment, allow_mixed: bool = False) -> list[str]:
    """Refuse (InputError) a leaderboard whose entries were made by different code,
    platforms or thread counts unless allow_mixed; returns what differs."""
    return provenance.check_combinable(
        provenance_rows(exp), allow_mixed, f"the leaderboard of {exp.uri}"
    )


def compare(
    exp_a: Experiment, a: str, exp_b: Experiment, b: str, *, allow_mixed: bool = False
) -> dict:
    """A vs B on the same folds and seeds: mean UF1/UAR of each, the difference A - B with a
    paired subject-level bootstrap interval (BCa) and a paired permutation p-value. Refused
    when A and B were made by different code, platforms or thread counts unless allow_mixed
    (the output's "mixed" then says what differs)."""
    for exp, entry in ((exp_a, a), (exp_b, b)):
        if entry not in exp.params:
            raise InputError(f"{exp.uri}: no entry {entry!r} (known: {sorted(exp.params)})")
        if entry_scores(exp, entry)["status"] != "complete":
            raise InputError(f"{exp.uri}: {entry} has not finished every fold at every seed")
    name_a, name_b = (a, b) if a != b or exp_a.uri != exp_b.uri else (a, f"{b} (B)")
    diff = provenance.check_combinable(
        {name_a: provenance_of(exp_a, a), name_b: provenance_of(exp_b, b)},
        allow_mixed,
        f"comparing {a} with {b}",
    )
    pa_, pb = exp_a.outer(a), exp_b.outer(b)
    seeds = sorted(set(exp_a.seeds) & set(exp_b.seeds))
    subjects = _subjects(pa_)
    if not seeds or subjects != _subjects(pb):
        raise InputError(
            f"{a} and {b} were not run on the same held-out subjects and seeds; a paired "
            "comparison needs both"
        )
    pa_, pb = pa_[pa_["seed"].isin(seeds)], pb[pb["seed"].isin(seeds)]
    cms_a = stats.subject_confusions(pa_, seeds, subjects, exp_a.num_classes)
    cms_b = stats.subject_confusions(pb, seeds, subjects, exp_b.num_classes)
    out = {
        "a": {"experiment": exp_a.uri, "entry": a, "params": exp_a.params[a]},
        "b": {"experiment": exp_b.uri, "entry": b, "params": exp_b.params[b]},
        "seeds": seeds,
        "subjects": len(subjects),
        "resamples": stats.N_RESAMPLES,
        "note": (
            "A - B of the mean over seeds of the pooled score; 95 % interval from a paired "
            "bootstrap over held-out subjects (BCa); p from a paired permutation test (each "
            "subject's predictions swapped between A and B)"
        ),
        "provenance": {"a": provenance_of(exp_a, a), "b": provenance_of(exp_b, b)},
    }
    if diff:
        out["mixed"] = diff
    for metric in ("uf1", "uar"):
        out[metric] = {
            "a": float(stats.per_seed(cms_a, metric).mean()),
            "b": float(stats.per_seed(cms_b, metric).mean()),
            **stats.paired(cms_a, cms_b, metric),
        }
    return out


def format_compare(c: dict) -> str:
    lines = [
        f"A = {c['a']['entry']} {c['a']['params']}",
        f"B = {c['b']['entry']} {c['b']['params']}",
        f"{c['subjects']} held-out subjects x seeds {c['seeds']}; {c['note']}",
    ]
    if c.get("mixed"):
        lines.append("Made by different code, platforms or thread counts: " + "; ".join(c["mixed"]))
    for metric in ("uf1", "uar"):
        m = c[metric]
        lines.append(
            f"{metric.upper()}: A {m['a']:.4f}  B {m['b']:.4f}  A - B {m['difference']:+.4f} "
            f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] ({m['interval']})  p = {m['p_value']:.4f}  "
            f"({m['verdict']})"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- summary


def summary(exp: Experiment) -> dict:
    """Everything a report needs, JSON-ready."""
    board = leaderboard(exp)
    per_seed = {e: entry_scores(exp, e)["per_seed"] for e in exp.params}
    rows = []
    for r in records(board):
        rows.append({**r, "per_seed": per_seed[r["config_id"]]})
    out = {
        "experiment": exp.meta.get("experiment"),
        "uri": exp.uri,
        "status": exp.meta.get("status"),
        "protocol": "loso-search",
        "note": SEARCH_NOTE,
        "statistics": STAT_NOTE,
        "folds_total": len(exp.meta.get("folds", [])),
        "seeds": exp.seeds,
        "leaderboard": [r for r in rows if r["status"] == "complete"],
        "incomplete": [r for r in rows if r["status"] != "complete"],
        "baselines": [r["config_id"] for r in rows if r["kind"] == "baseline"],
    }
    if out["incomplete"]:
        out["partial"] = True
    mixed = provenance.mixed(provenance_rows(exp))
    if mixed:  # rows of other code, platforms or thread counts (jobs/results.py refuses them)
        out["mixed"] = mixed
    top = top_config(exp)
    if top:
        out["top"] = {
            "config_id": top,
            "params": exp.params[top],
            "tied": [r["config_id"] for r in rows if r.get("standing") == "tied"],
        }
    if exp.meta.get("protocol") == "nested":
        out["nested"] = nested(exp)
    return out


def records(df: pd.DataFrame) -> list[dict]:
    def clean(v):
        if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    return [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]
