"""Difficulty cards of synthetic presets: what simple readers of the key frames reach.

    python jobs/difficulty.py --config configs/testbed.yaml
    python jobs/difficulty.py --config configs/testbed.yaml --presets dynamics long-clip \
        --set data.synthetic.size=[64,64] --subjects 6 --epochs 8

For each preset (default: the test bed's) the set is generated and its key frames built by
the key-frame stage (mer.keyframes.preprocess, in this process) under the config's root, exactly as a
study would; then mer.evaluation.difficulty scores majority, linear (apex - onset), multi-frame linear,
the two-number motion-energy oracle, lbp-top, flow-cnn and a small C3D with and without its
key frames shuffled in time, over leave-one-subject-out folds. Writes
<root>/difficulty/<card hash>/<preset>.{json,md} and cards.md (one table), and prints it.
`data.synthetic` options of the config and --set apply to every preset on top of its own.
"""

import _bootstrap  # noqa: F401

from mer import cli

TESTBED = ("dynamics", "scarce", "plentiful", "imbalanced", "balanced", "long-clip", "realistic")


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--presets", nargs="+", default=list(TESTBED))
    p.add_argument("--epochs", type=int, help="the card's method rows: epochs (default 15)")
    p.add_argument("--width", type=float, help="the card's method rows: C3D width (0.125)")
    p.add_argument("--rows", nargs="+", help="only these readers (default: all)")
    p.add_argument(
        "--subjects",
        type=int,
        help="a smaller population: this many subjects, a preset's total clips scaled with it",
    )
    args = p.parse_args()
    cfg = cli.load_config(args)

    import dataclasses

    import pandas as pd

    from mer import layout, storage
    from mer.datasets.stage import ensure_data
    from mer.datasets.synthetic.generator import PRESETS
    from mer.errors import ConfigError
    from mer.evaluation import difficulty
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.keyframes.table import load_table, outer_runs, select_folds

    unknown = [x for x in args.presets if x not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {unknown}; expected some of {list(PRESETS)}")
    if cfg.data.dataset != "synthetic":
        raise ConfigError("jobs/difficulty.py reads synthetic sets (data.dataset: synthetic)")
    given = {
        "epochs": args.epochs,
        "width": args.width,
        "rows": tuple(args.rows) if args.rows else None,
    }
    card_settings = difficulty.CardSettings(**{k: v for k, v in given.items() if v is not None})
    bad = [r for r in card_settings.rows if r not in difficulty.ROWS]
    if bad:
        raise ConfigError(f"unknown row(s) {bad}; expected some of {list(difficulty.ROWS)}")
    cards = {}
    for preset in args.presets:
        synthetic = {**cfg.data.synthetic, "preset": preset}
        if args.subjects:
            own = PRESETS[preset]
            synthetic["subjects"] = args.subjects
            if own.get("clips"):
                synthetic["clips"] = max(
                    args.subjects, round(own["clips"] * args.subjects / own.get("subjects", 8))
                )
        pcfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic=synthetic))
        root = ensure_data(pcfg)
        build_keyframes_dataset(pcfg, use_ray=False)
        kf = layout.keyframes_uri(pcfg)
        table = load_table(kf)
        runs = outer_runs(select_folds(table, None))
        truth = pd.read_csv(
            storage.join(root, "ground_truth.csv"), dtype={"subject": str, "clip": str}
        )
        print(f"[difficulty] {preset}: {len(table.clips)} clips, {len(runs)} folds ...", flush=True)
        result = difficulty.card(table, truth, runs, card_settings)
        result = {"preset": preset, "table": kf, "data": layout.data_settings(pcfg), **result}
        key = layout.digest({"keyframes": layout.keyframes_hash(pcfg), **result["settings"]})
        out = storage.join(cfg.root, "difficulty", key)
        difficulty.write(out, preset, result)
        cards[preset] = result
        print(difficulty.markdown({preset: result}), flush=True)
    table_md = difficulty.markdown(cards)
    storage.write_bytes(storage.join(cfg.root, "difficulty", "cards.md"), table_md.encode())
    print(table_md)


if __name__ == "__main__":
    cli.main(main)
