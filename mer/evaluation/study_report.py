"""The ablation study's table as people read it: Markdown, CSV rows, the UF1 plot and one
self-contained HTML page.

`mer.evaluation.study_table.study_table` makes the table (rows, scores, paired comparisons,
key-frame facts) and `mer.evaluation.study_run.write_study` writes these renderings of it
beside study.json; this module only renders. Every row carries its interval; a row that is
not complete says so instead of a verdict.
"""

from __future__ import annotations

from mer.evaluation import html_page as h
from mer.evaluation.results_report import figure_png, private_matplotlib_cache


def _fmt(score: dict | None) -> str:
    if not score or score.get("mean") is None:
        return "-"
    text = f"{score['mean']:.3f} +- {score.get('sd') or 0:.3f}"
    if score.get("lo") is not None:
        text += f" [{score['lo']:.3f}, {score['hi']:.3f}]"
    return text


def _fmt_diff(d: dict | None) -> str:
    if not d:
        return "-"
    text = f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] p={d['p_value']:.3g}"
    if d.get("p_holm") is not None:
        text += f", Holm {d['p_holm']:.3g}"
    return text


def flat_rows(table: dict) -> list[dict]:
    """One flat record per row (the CSV)."""
    out = []
    keys = ("preset", "variant", "claim", "kind", "exploratory", "settings", "experiment")
    for r in table["rows"]:
        flat = {k: r.get(k) for k in keys}
        flat.update(config_id=r.get("config_id"), status=r["status"], folds=r.get("folds"))
        for m in ("uf1", "uar"):
            for k, v in (r.get(m) or {}).items():
                flat[f"{m}_{k}"] = v
            d = (r.get("full_minus_row") or {}).get(m) or {}
            for k in ("difference", "ci_low", "ci_high", "interval", "p_value", "p_holm"):
                flat[f"full_minus_row_{m}_{k}"] = d.get(k)
            flat[f"full_minus_row_{m}_family"] = d.get("family")
            flat[f"full_minus_row_{m}_verdict"] = d.get("verdict")
        prov = r.get("provenance") or {}
        for k in ("code", "commit", "platform", "threads"):
            flat[k] = " + ".join(prov[k]) if k in prov else None
        out.append(flat)
    return out


def markdown(table: dict) -> str:
    presets = any(r.get("preset") for r in table["rows"])
    lines = [
        f"# Study {table['study']}",
        "",
        _registration_text(table.get("registration")),
        "",
        f"Data: {table['dataset']} ({_data_text(table['data'])}); seeds {table['seeds']}.",
        "",
        f"Selection of the full method's settings: {table['selection']}.",
        "",
        f"Statistics: {table['note']}.",
        "",
        "| " + ("preset | " if presets else "") + "variant | claim | settings | UF1 | UAR | "
        "full - row, UF1 | full - row, UAR | verdict (UF1, Holm) |",
        "|---" * (9 if presets else 8) + "|",
    ]
    for r in table["rows"]:
        d = r.get("full_minus_row") or {}
        verdict = d.get("uf1", {}).get("verdict", "") if d else ""
        if r["status"] != "complete":
            verdict = r["status"]
        lines.append(
            "| "
            + (f"{r.get('preset') or ''} | " if presets else "")
            + f"{_name(r)} | {r['claim']} | {r['settings']} | {_fmt(r.get('uf1'))} | "
            f"{_fmt(r.get('uar'))} | {_fmt_diff(d.get('uf1'))} | {_fmt_diff(d.get('uar'))} | "
            f"{verdict} |"
        )
    lines += _families_text(table) + _presets_text(table)
    lines += _claims_text(table.get("claims") or [])
    lines += _mixed_text(table.get("mixed"))
    lines += _threads_text(table["rows"]) + _platforms_text(table["rows"])
    lines += _keyframes_text(table.get("keyframes") or [])
    lines += _priors_text(table.get("priors") or [])
    untestable = [r for r in table["rows"] if r["status"] == "untestable"]
    if untestable:
        lines += ["", "Rows not run because this set cannot test them:", ""]
        lines += [f"- {r['variant']}: {r['reason']}." for r in untestable]
    stale = [r for r in table["rows"] if r["status"] == "stale"]
    if stale:
        lines += ["", "Stale rows (results made under other settings are not shown):", ""]
        lines += [f"- {r['variant']}: {r['stale']}" for r in stale]
    return "\n".join(lines) + "\n"


def _name(r: dict) -> str:
    """A row's variant name, with "(exploratory)" on rows declared after results were seen."""
    return r["variant"] + (" (exploratory)" if r.get("exploratory") else "")


def _registration_text(reg: dict | None) -> str:
    if not reg:
        return (
            "Not registered: the variants and comparisons were not fixed before the results "
            "(rows marked exploratory were added after results of this study were seen)."
        )
    code = reg["code"].get("commit") or reg["code"].get("code")
    return (
        f"Registered {reg['registered']} (hash {reg['hash']}, code {code}) before anything "
        "ran; rows and comparisons added later are marked exploratory."
    )


def _families_text(table: dict) -> list[str]:
    fam = table.get("families") or {}
    if not fam:
        return []
    p, e = fam.get("primary", {}), fam.get("exploratory", {})
    return [
        "",
        f"Multiplicity: Holm over the primary family, {p.get('comparisons', 0)} comparisons x "
        f"UF1 and UAR = {p.get('tests', 0)} tests; the exploratory family counted apart, "
        f"{e.get('comparisons', 0)} comparisons = {e.get('tests', 0)} tests. A verdict "
        "'difference' needs a Holm-adjusted permutation p below 0.05 in its family.",
    ]


def _presets_text(table: dict) -> list[str]:
    done = [p for p in table.get("presets") or [] if p.get("subjects")]
    if not done:
        return []
    lines = [
        "",
        "Subjects (held out, one fold each) and Kish's effective number of subjects, "
        "(sum of clips)^2 / sum of clips^2:",
        "",
    ]
    for p in done:
        lo, hi = p["clips_per_subject"]
        lines.append(
            f"- {p['preset'] or table['study']}: {p['subjects']} subjects, {p['clips']} clips "
            f"({lo}-{hi} per subject), effective subjects {p['effective_subjects']:.1f}"
        )
    return lines


def _claims_text(claims: list[dict]) -> list[str]:
    """One table per registered claim: condition, difference, adjusted p, verdict."""
    lines = []
    for c in claims:
        fam = " (exploratory)" if c["family"] == "exploratory" else ""
        lines += [
            "",
            f"Claim{fam}: {c['claim']}, {c['a']} vs {c['b']}",
            "",
            "| condition | a - b | UF1 difference [95 %] | p | Holm p | verdict | UAR difference "
            "[95 %] | Holm p | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if not c["conditions"]:
            lines.append(f"| {c['matters']}, {c.get('control') or '-'} | not run yet |||||||")
        for k in c["conditions"]:
            u, a = k["uf1"], k["uar"]
            lines.append(
                f"| {k['preset']} ({k['role']}) | {k['a']} - {k['b']} | "
                f"{u['difference']:+.3f} [{u['ci_low']:+.3f}, {u['ci_high']:+.3f}] | "
                f"{u['p_value']:.3g} | {u['p_holm']:.3g} | {u['verdict']} | "
                f"{a['difference']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}] | "
                f"{a['p_holm']:.3g} | {a['verdict']} |"
            )
    return lines


def _mixed_text(mixed: list[str] | None) -> list[str]:
    if not mixed:
        return []
    return [
        "",
        "Rows made by different code, platforms or thread counts, combined on request "
        "(--allow-mixed; any of them can move a score by itself): " + "; ".join(mixed) + ".",
    ]


def _label(r: dict) -> str:
    """A row's variant name with its swept settings (freeze=2)."""
    return r["variant"] + "".join(f" {k}={x}" for k, x in (r.get("swept") or {}).items())


def _threads_text(rows: list[dict]) -> list[str]:
    """One line on the torch thread counts: the same config and seeds can score differently
    on another thread count (floating-point reduction order), so a row whose fold runs used
    another count than the full method's is named."""
    full = next((r.get("threads") for r in rows if r["kind"] == "full"), None)
    if not full:
        return []
    other = [
        f"{_label(r)} ({', '.join(map(str, r['threads']))})"
        for r in rows
        if r.get("threads") and r["threads"] != full and r["kind"] != "full"
    ]
    counts = ", ".join(map(str, full))
    text = f"Torch threads per fold run: full {counts}"
    if other:
        text += "; on other counts (can move a score by itself): " + "; ".join(other)
    else:
        text += "; every other method row the same"
    return ["", text + "."]


def _platforms_text(rows: list[dict]) -> list[str]:
    """Which platforms (CPU model and kernels, or GPU, and torch) the method rows ran on."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if r["kind"] == "baseline" or "platforms" not in r:
            continue
        by.setdefault(" + ".join(r["platforms"]) or "not recorded", []).append(_label(r))
    if not any(p != "not recorded" for p in by):
        return []
    text = "; ".join(f"{', '.join(names)}: {p}" for p, names in by.items())
    return [
        "",
        f"Platforms the fold runs computed on (another can move a score by itself): {text}.",
    ]


def _keyframes_text(keyframes: list[dict]) -> list[str]:
    built = [k for k in keyframes if k.get("table")]
    if not built:
        return []
    lines = [
        "",
        "Key-frame tables (which clips' key frames hold the apex frame, how many "
        "key-frame positions are interpolated):",
        "",
    ]
    lines += [
        "| variants | table | clips | apex held | interpolated positions |",
        "|---|---|---|---|---|",
    ]
    for k in built:
        where = f"{k['preset']}: " if k.get("preset") else ""
        lines.append(
            f"| {where}{', '.join(k['variants'])} | {k['table']} | {k['clips']} | "
            f"{k['apex_held']} of {k['clips']} | {k['interpolated']} of {k['positions']} |"
        )
    return lines


def _priors_text(priors: list[dict]) -> list[str]:
    """What the priors learnt: whether the prior-learning and freezing rows test a prior
    that learns (pair accuracy near 0.5 and a k-NN accuracy at the majority share: it did
    not)."""
    learnt = [p for p in priors if p.get("priors")]
    if not learnt:
        return []
    lines = [
        "",
        "What the priors learnt (each prior's last-epoch training pair accuracy, 0.5 is "
        "chance; its 5-NN probe on the held-out subjects of its folds, beside those clips' "
        "majority-class share):",
        "",
        "| variants | priors | pair accuracy, mean [min, max] | k-NN accuracy | majority share |",
        "|---|---|---|---|---|",
    ]
    for p in learnt:
        where = f"{p['preset']}: " if p.get("preset") else ""
        pa = p["pair_accuracy"]
        knn = f"{p['knn_accuracy']:.3f} ({p['probed']} probed)" if p.get("probed") else "-"
        share = f"{p['majority_share']:.3f}" if p.get("probed") else "-"
        lines.append(
            f"| {where}{', '.join(p['variants'])} | {p['priors']} | {pa['mean']:.3f} "
            f"[{pa['min']:.3f}, {pa['max']:.3f}] | {knn} | {share} |"
        )
    return lines


def _data_text(data: dict) -> str:
    keys = ("data.synthetic.preset", "data.synthetic.seed", "data.synthetic.clips")
    keys += ("data.synthetic.subjects", "data.root")
    return ", ".join(f"{k.split('.')[-1]} {data[k]}" for k in keys if data.get(k) is not None)


def _plotted(table: dict) -> list[dict]:
    return [r for r in table["rows"] if (r.get("uf1") or {}).get("mean") is not None]


def plot_labels(table: dict) -> list[str]:
    """The plot's row labels, top to bottom: preset, variant, swept settings, and
    "(exploratory)" / "(partial)" where a row is."""
    labels = []
    for r in _plotted(table):
        label = (f"{r['preset']}: " if r.get("preset") else "") + _label(r)
        label += " (exploratory)" if r.get("exploratory") else ""
        labels.append(label if r["status"] == "complete" else label + " (partial)")
    return labels


def plot(table: dict) -> bytes:
    """UF1 with its interval per row, the full method's mean as a reference line (PNG)."""

    private_matplotlib_cache()  # a study on a cluster leaves no font cache in ~/.cache
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _plotted(table)
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.6))
    colours = {"full": "tab:green", "variant": "tab:blue", "baseline": "tab:red"}
    for i, r in enumerate(rows):
        colour = "tab:grey" if r.get("exploratory") else colours[r["kind"]]
        y = len(rows) - 1 - i
        s = r["uf1"]
        lo = s["lo"] if s.get("lo") is not None else s["mean"]
        hi = s["hi"] if s.get("hi") is not None else s["mean"]
        ax.errorbar(
            s["mean"],
            y,
            xerr=[[s["mean"] - lo], [hi - s["mean"]]],
            fmt="o",
            capsize=3,
            color=colour,
            mfc="white" if r["status"] != "complete" else None,
        )
    ax.set_yticks(range(len(rows))[::-1], plot_labels(table), fontsize=8)
    full = next((r for r in rows if r["kind"] == "full"), None)
    if full and not any(r.get("preset") for r in rows):  # one reference line per study
        ax.axvline(full["uf1"]["mean"], ls="--", color="tab:green", lw=1, label="full method")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("pooled LOSO UF1, mean over seeds, 95 % subject-bootstrap interval (BCa)")
    ax.set_title(f"study {table['study']}")
    return figure_png(fig)


DIFF_KEYS = ("difference", "ci_low", "ci_high", "p_value")


def html(table: dict, study_png: bytes | None = None) -> str:
    """The study as one self-contained page: what it tests and how, every row with its
    interval, each claim's paired difference to the full method with its verdict, the plot
    (inline) and the facts that qualify the numbers. Numbers are study.json's, three
    decimals (p-values four); each numeric cell names its row (variant and settings) and key."""

    rows = table["rows"]
    # Keys beyond the usual four that a comparison carries (an adjusted p, say) get a column.
    extra = sorted(
        {
            k
            for r in rows
            for m in ("uf1", "uar")
            for k, v in ((r.get("full_minus_row") or {}).get(m) or {}).items()
            if k not in DIFF_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    about = [
        f"Data: {table['dataset']} ({_data_text(table['data'])}); seeds {table['seeds']}; "
        f"protocol {table.get('protocol', 'loso')}.",
        f"Selection of the full method's settings: {table['selection']}.",
        f"Statistics: {table['note']}.",
        "A verdict of 'no evidence of a difference' says the data cannot separate the two "
        "rows, not that they are equal; a row that is not complete has no verdict.",
    ]
    headers = ["variant", "claim", "settings", "status", "UF1", "SD", "low", "high"]
    headers += ["UAR", "SD", "low", "high"]
    body, classes = [], []
    for r in rows:
        e = row_key(r)
        cells: list = [_label(r), r.get("claim") or "", r.get("settings") or "", r["status"]]
        for m in ("uf1", "uar"):
            score = r.get(m) or {}
            cells += [h.number(score.get(k), e, f"{m}.{k}") for k in ("mean", "sd", "lo", "hi")]
        body.append(cells)
        classes.append(
            "partial"
            if r["status"] != "complete"
            else ("baseline" if r["kind"] == "baseline" else "")
        )
    claims_headers = ["variant", "claim", "metric", "full - row", "low", "high", "p"]
    claims_headers += extra + ["verdict"]
    claims = []
    for r in rows:
        d = r.get("full_minus_row") or {}
        for m in ("uf1", "uar"):
            if not d.get(m):
                continue
            c = d[m]
            e, k = row_key(r), f"full_minus_row.{m}"
            cells = [_label(r), r.get("claim") or "", m.upper()]
            cells += [h.number(c.get(x), e, f"{k}.{x}") for x in DIFF_KEYS[:3]]
            cells.append(h.number(c.get("p_value"), e, f"{k}.p_value", digits=4))
            cells += [h.number(c.get(x), e, f"{k}.{x}", digits=4) for x in extra]
            verdict = c.get("verdict", "") if r["status"] == "complete" else r["status"]
            claims.append(cells + [verdict])
    qualifiers = [t for t in _threads_text(rows) + _platforms_text(rows) if t]
    not_run = [
        f"{r['variant']}: {r.get('reason') or r.get('stale') or r['status']}"
        for r in rows
        if r["status"] not in ("complete", "partial")
    ]
    parts = [
        h.section("What the study tests and how", h.items(about)),
        h.section(
            "Rows",
            h.table(headers, body, classes),
            h.paragraph(
                "UF1 and UAR: mean over seeds, SD over seeds, [low, high] the 95 % "
                "subject-bootstrap interval.",
                "note",
            ),
        ),
        h.section(
            "Claims and verdicts (paired, full method - row, same folds and seeds)",
            h.table(claims_headers, claims),
        ),
    ]
    png = plot(table) if study_png is None else study_png
    parts.append(h.section("Plot", h.image(png, "UF1 of each row with its 95 % interval")))
    if qualifiers or not_run:
        parts.append(
            h.section(
                "What qualifies the numbers",
                h.items(qualifiers) if qualifiers else "",
                h.paragraph("Rows not run:") + h.items(not_run) if not_run else "",
            )
        )
    return h.page(f"Study {table['study']}", *parts)


def row_key(r: dict) -> str:
    """A row's name on the page (data-entry): its variant and swept settings."""
    return _label(r)
