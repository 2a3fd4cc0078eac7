"""``gliomasuite train-recurrence --data CASES --out RUN --validation CASE ...``: the recurrence network,
trained on series simulated from labelled baselines (:mod:`gliomasuite.recurrence.training`)."""

from pathlib import Path

from ..errors import GliomaSuiteError


def add_parser(sub) -> None:
    p = sub.add_parser("train-recurrence", help="simulate post-treatment series from labelled baselines and train the "
                                                "recurrent U-Net (recurrence probability and next-visit map)")
    p.add_argument("--data", required=True, help="folder of labelled BraTS cases (<case>/<case>_{t1,t1ce,t2,flair,seg})")
    p.add_argument("--out", required=True, help="run folder: simulations/, checkpoint.pt, train-log.jsonl, recurrence.npz "
                                                "(an existing run is resumed)")
    p.add_argument("--validation", nargs="+", required=True, metavar="CASE",
                   help="baselines kept for validation: none of their series is trained on")
    p.add_argument("--series-per-case", type=int, default=16, help="simulated series made from each baseline")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training series")
    p.add_argument("--batch", type=int, default=4, help="samples per step")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate (Adam, warm-up then cosine)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulations and the training")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--simulations", help="where the simulated series are kept (default: RUN/simulations)")
    p.add_argument("--init-weights", metavar="NPZ", help="start from a trained recurrence network (fine-tuning); "
                                                         "refused if it was trained on a validation baseline")
    p.set_defaults(func=run)


def run(args, progress) -> dict:
    for name in ("series_per_case", "epochs", "batch"):
        if getattr(args, name) < 1:
            raise GliomaSuiteError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}.")
    from ..recurrence.training import train_recurrence

    return train_recurrence(Path(args.data), Path(args.out), args.validation, series_per_case=args.series_per_case,
                            epochs=args.epochs, batch=args.batch, learning_rate=args.learning_rate, seed=args.seed,
                            threads=args.threads, simulations=Path(args.simulations) if args.simulations else None,
                            init_weights=args.init_weights,
                            progress=progress.update)
