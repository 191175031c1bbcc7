"""Look at a key-frame table or a dataset root: a summary and per-clip contact sheets.

    python jobs/inspection.py --config configs/demo.yaml                 # the run's key frames
    python jobs/inspection.py --config configs/casme2.yaml --dataset     # the dataset root itself
    python jobs/inspection.py --config configs/smic.yaml --clips 24 --out /tmp/smic-look
    python jobs/inspection.py --config configs/casme2.yaml --clip sub01/EP02_01f

With the config's key-frame table (or --keyframes URI) it summarises the table and draws
clips from it; with --dataset, or when the key frames are not built yet, it summarises the
dataset's manifest and builds the drawn clips' key frames on the fly with the config's
keyframes.* settings. Writes summary.json, summary.txt, config.yaml and sheets/<dataset>-
<subject>-<clip>.png under --out (default <root>/inspect/<key-frame hash or "dataset">/). No Ray.
"""

import _bootstrap  # noqa: F401

from mer import cli, layout, storage


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--keyframes", help="key-frame table URI (default: the config's)")
    p.add_argument(
        "--dataset", action="store_true", help="inspect the dataset root, not the key frames"
    )
    p.add_argument("--clips", type=int, default=12, help="contact sheets to draw (default 12)")
    p.add_argument(
        "--clip",
        action="append",
        default=[],
        metavar="NAME",
        help="draw this clip (clip, subject/clip or dataset/subject/clip; repeatable)",
    )
    p.add_argument("--out", help="output folder (default <root>/inspect/<hash or 'dataset'>)")
    args = p.parse_args()
    cfg = cli.load_config(args)
    from mer.keyframes import inspection

    uri = args.keyframes or layout.keyframes_uri(cfg)
    finished = storage.exists(storage.join(uri, "_meta.json"))
    if not args.dataset and (finished or args.keyframes):
        from mer.keyframes.table import read_meta

        out = args.out or storage.join(cfg.root, "inspect", read_meta(uri)["hash"])
        summary = inspection.inspect_keyframes(uri, out, args.clips, names=args.clip, seed=cfg.seed)
    else:
        if not args.dataset:
            print(f"[inspect] no key-frame table at {uri} yet; inspecting the dataset root")
        if cfg.data.dataset == "synthetic" and not storage.exists(layout.data_root(cfg)):
            from mer.datasets.stage import ensure_data

            ensure_data(cfg)  # generated as jobs/preprocess.py would; an existing one is read
        out = args.out or storage.join(cfg.root, "inspect", "dataset")
        summary = inspection.inspect_dataset(cfg, out, args.clips, names=args.clip)
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    print()
    print(inspection.format_summary(summary))
    print(f"\nwritten under {out}: summary.json, summary.txt, config.yaml, sheets/")


if __name__ == "__main__":
    cli.main(main)
