"""The final model of a search: the chosen configuration trained on all subjects, with a
portable export and a model card.

    python jobs/export.py --config configs/demo.yaml
    python jobs/export.py --config configs/demo.yaml --config-id fc1a4587fe --name demo-fc1a
    python jobs/export.py --config configs/megc2019.yaml --experiment megc2019-focal

Pass the config the search ran with (checked against the experiment's settings). The
configuration is the one nested LOSO chose for the most held-out subjects (search.protocol
nested), else the top of the leaderboard by mean UF1 over seeds, or --config-id. It is
trained like each of its fold runs (prior learning, then target learning) on all subjects
at the experiment's first seed. Output, under <root>/models/<name>/ (name: the experiment's
by default): model.pt (weights only), model.pt2 (torch.export program: uint8 key frames in,
probabilities out), model_card.json and MODEL_CARD.md. A rerun with the same settings keeps
the weights and refreshes the card; a name holding another model is refused.
"""

import shlex

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument(
        "--experiment", help="experiment name under <root>/tune/ or its URI (default: the config's)"
    )
    p.add_argument("--config-id", help="train this configuration instead of the chosen one")
    p.add_argument("--name", help="output folder under <root>/models/ (default: the experiment)")
    p.add_argument("--seed", type=int, help="training seed (default: the experiment's first)")
    args = p.parse_args()
    cfg = cli.load_config(args)
    from mer import storage
    from mer.serving.export import export_model, search_ran

    # Before Ray starts: an export before any search is one sentence naming the search to run.
    same = ["--config", args.config, *(["--root", args.root] if args.root else [])]
    for item in args.set:
        same += ["--set", item]
    if args.experiment and "/" not in args.experiment:
        same += ["--set", f"search.experiment={args.experiment}"]
    search_ran(cfg, args.experiment, shlex.join(["python", "jobs/tune.py", *same]))
    cli.connect_ray(args, cfg)
    from mer.serving.model_folder import CARD

    folder = export_model(
        cfg, args.experiment, config_id=args.config_id, name=args.name, seed=args.seed
    )
    card = storage.read_json(storage.join(folder, CARD))
    ev, t = card["evaluation"], card["training"]
    score = ev.get("nested_loso") if ev["estimate"] == "nested_loso" else ev["loso_search"]
    print(
        f"model {folder}: config {t['config_id']} {t['params']} ({t['rule']}), seed {t['seed']}; "
        f"{ev['estimate'].replace('_', '-')} UF1 {score.get('uf1', float('nan')):.3f} "
        f"UAR {score.get('uar', float('nan')):.3f}; see MODEL_CARD.md"
    )


if __name__ == "__main__":
    cli.main(main)
