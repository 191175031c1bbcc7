"""Results logged to an MLflow tracking server (config `tracking.mlflow_uri`), optional.

An experiment becomes one MLflow parent run (MLflow experiment `mer/<experiment>`) holding
the leaderboard (JSON, CSV), the plots and report.html as artifacts, with one child run per
configuration and baseline: its searched parameters, its pooled UF1/UAR (mean, SD over
seeds, 95 % interval), per-class F1, per-dataset UF1 and the score at each seed. A study
becomes one parent run (MLflow experiment `mer-study/<study>`) with a child per row: its
scores and its paired difference to the full method (interval, p, verdict).

MLflow only mirrors what mer.evaluation.results / mer.evaluation.study_table computed from the
saved predictions (they stay the authority); logging again (a rerun, a resumed search) updates
the same runs, found by the tags `mer.uri` and `mer.entry`, instead of adding new ones.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from mer import storage
from mer.errors import ConfigError
from mer.evaluation import results, results_report
from mer.evaluation.study_report import row_key

SCORE_KEYS = ("uf1", "uf1_sd", "uf1_lo", "uf1_hi", "uar", "uar_sd", "uar_lo", "uar_hi")


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ConfigError(
            "config tracking.mlflow_uri needs the MLflow client: "
            "pip install -r requirements-mlflow.txt"
        ) from e
    return MlflowClient(tracking_uri=uri)


def _name(key: str) -> str:
    """An MLflow metric name: f1[negative] -> f1_negative."""
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", key).strip("_").replace("__", "_")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


class _Runs:
    """The parent run of one results URI in one MLflow experiment, and its children."""

    def __init__(self, uri: str, experiment: str, results_uri: str, title: str) -> None:
        self.client = _client(uri)
        found = self.client.get_experiment_by_name(experiment)
        self.exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.uri = results_uri
        existing = self._search(f"tags.`mer.uri` = '{results_uri}' and tags.`mer.role` = 'parent'")
        if existing:
            self.parent = existing[0].info.run_id
        else:
            tags = {"mer.uri": results_uri, "mer.role": "parent"}
            self.parent = self.client.create_run(self.exp_id, run_name=title, tags=tags).info.run_id
        self.children = {
            r.data.tags["mer.entry"]: r.info.run_id
            for r in self._search(f"tags.`mlflow.parentRunId` = '{self.parent}'")
        }

    def _search(self, flt: str):
        return self.client.search_runs([self.exp_id], filter_string=flt, max_results=1000)

    def child(self, entry: str, title: str, tags: dict) -> str:
        if entry not in self.children:
            ids = {"mlflow.parentRunId": self.parent, "mer.entry": entry, "mer.uri": self.uri}
            run = self.client.create_run(self.exp_id, run_name=title, tags=ids)
            self.children[entry] = run.info.run_id
        run_id = self.children[entry]
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))
        return run_id

    def log(self, run_id: str, params: dict, metrics: dict) -> None:
        from mlflow.entities import Metric, Param

        have = self.client.get_run(run_id).data.params
        # A parameter is logged once (MLflow keeps it immutable); scores may change.
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]
        now = _now_ms()
        values = [Metric(_name(k), float(v), now, 0) for k, v in metrics.items() if _number(v)]
        for i in range(0, max(len(values), len(new)), 500):
            self.client.log_batch(run_id, metrics=values[i : i + 500], params=new[i : i + 100])
        self.client.update_run(run_id, status="FINISHED")  # set_terminated prints a link per run

    def artifacts(self, files: dict[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="mer-mlflow-") as tmp:
            for rel, data in files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self.client.log_artifacts(self.parent, tmp)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def log_experiment(uri: str, exp, out: str | None = None) -> str:
    """Log a search experiment (mer.evaluation.results.Experiment) to the MLflow server at `uri`;
    returns the parent run's id. `out`: a report folder to attach (write_report's), else
    the leaderboard, plots and report.html are rendered here."""

    s = results.summary(exp)
    name = s.get("experiment") or exp.uri
    runs = _Runs(uri, f"mer/{name}", exp.uri, name)
    for r in s["leaderboard"] + s["incomplete"]:
        e = r["config_id"]
        kind = r["kind"]
        params = {"entry": e, "kind": kind}
        if kind != "baseline":
            params.update(exp.params.get(e, {}))
        metrics = {k: r.get(k) for k in SCORE_KEYS + ("accuracy", "folds_done", "seeds_done")}
        metrics.update({k: v for k, v in r.items() if k.startswith(("f1[", "uf1["))})
        for p in r.get("per_seed", []):
            metrics[f"uf1_seed_{p['seed']}"] = p.get("uf1")
            metrics[f"uar_seed_{p['seed']}"] = p.get("uar")
        tags = {
            "mer.kind": kind,
            "mer.status": r["status"],
            "mer.standing": r.get("standing") or "",
        }
        runs.log(runs.child(e, results.label(exp, e), tags), params, metrics)
    top = s.get("top") or {}
    parent = {"experiment": name, "protocol": s["protocol"], "folds": s["folds_total"]}
    parent["seeds"] = json.dumps(s["seeds"])
    head = {}
    if top:
        row = next(r for r in s["leaderboard"] if r["config_id"] == top["config_id"])
        head = {f"top_{k}": row.get(k) for k in SCORE_KEYS}
        runs.client.set_tag(runs.parent, "mer.top", top["config_id"])
    nested = s.get("nested") or {}
    head.update({f"nested_{k}": nested.get(k) for k in SCORE_KEYS})
    runs.client.set_tag(runs.parent, "mer.note", f"{results.SEARCH_NOTE}; {results.STAT_NOTE}")
    runs.log(runs.parent, parent, head)
    if out:
        files = {
            rel: storage.read_bytes(storage.join(out, rel))
            for rel in ("leaderboard.json", "leaderboard.csv", "report.html")
        }
        for uri_ in _plot_uris(out):
            files[f"plots/{uri_.rsplit('/', 1)[-1]}"] = storage.read_bytes(uri_)
    else:
        images = results_report.plot_images(exp)
        sheet = results_report.keyframe_sheet(exp)
        files = {f"plots/{k}": v for k, v in images.items()}
        if isinstance(sheet, results_report.KeyframeGrid):
            files[f"plots/{results_report.KEYFRAMES_PNG}"] = sheet.png
        files["leaderboard.json"] = json.dumps(s, indent=2, default=str).encode()
        files["leaderboard.csv"] = results.leaderboard(exp).to_csv(index=False).encode()
        files["report.html"] = results_report.html_report(exp, images, sheet).encode()
    runs.artifacts(files)
    return runs.parent


def _plot_uris(out: str) -> list[str]:
    """The PNGs under a report folder's plots/."""

    folder = storage.join(out, "plots")
    if not storage.exists(folder):
        return []
    return [storage.join(folder, f) for f in storage.listdir(folder) if f.endswith(".png")]


def log_study(uri: str, table: dict, files: dict[str, bytes]) -> str:
    """Log a study table (mer.evaluation.study_table.study_table's) with `files` (study.json,
    report.html, the plot ...) as artifacts; returns the parent run's id."""

    runs = _Runs(
        uri, f"mer-study/{table['study']}", table.get("uri") or table["study"], table["study"]
    )
    for r in table["rows"]:
        e = row_key(r)
        params = {k: r.get(k) for k in ("variant", "claim", "kind", "settings", "experiment")}
        params = {k: v for k, v in params.items() if v is not None}
        metrics = {}
        for m in ("uf1", "uar"):
            metrics.update({f"{m}_{k}": v for k, v in (r.get(m) or {}).items()})
            d = (r.get("full_minus_row") or {}).get(m) or {}
            metrics.update({f"full_minus_row_{m}_{k}": v for k, v in d.items()})
        for p in r.get("per_seed", []):
            metrics[f"uf1_seed_{p['seed']}"] = p.get("uf1")
        d = (r.get("full_minus_row") or {}).get("uf1") or {}
        tags = {"mer.kind": r["kind"], "mer.status": r["status"]}
        tags["mer.verdict_uf1"] = d.get("verdict", "") if r["status"] == "complete" else r["status"]
        runs.log(runs.child(e, e, tags), params, metrics)
    runs.client.set_tag(runs.parent, "mer.note", table.get("note", ""))
    runs.log(runs.parent, {"study": table["study"], "seeds": json.dumps(table["seeds"])}, {})
    runs.artifacts(files)
    return runs.parent
