"""Training configuration and its command-line options, shared by ``gliomasuite train-segmentation`` and
``python -m gliomasuite.segmentation.training`` (torchrun). Kept free of torch so building the command
line stays fast."""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence


@dataclass
class TrainConfig:
    cache: str
    out: str
    cases: Optional[List[str]] = None          # training cases (default: all in the cache)
    iterations: int = 4000
    batch_size: int = 2
    patch: Sequence[int] = (64, 64, 64)        # in network voxels (downsample mm each)
    downsample: int = 2                        # 2: the network sees 2 mm voxels (average-pooled)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    channels: Sequence[int] = (8, 16, 32, 64, 128)
    encoder_convs: Sequence[int] = (1, 2, 2, 2, 2)
    decoder_convs: Sequence[int] = (1, 1, 1, 1)
    class_ratios: Sequence[float] = (1, 1, 1, 2)
    modality_dropout: float = 0.1
    carvemix: float = 0.0                      # share of samples with another case's tumour pasted in
    checkpoint_every: int = 500
    max_minutes: Optional[float] = None        # stop (with a checkpoint) after this much wall time
    device: str = "auto"
    amp: bool = True
    log_every: int = 50
    init_weights: Optional[str] = None         # start from these shipped weights (.npz) instead of random
    norm: str = "instance"                     # "cohort": keep the init weights' fixed statistics (vnet.py)
    coarse: Optional[str] = None               # train a 1 mm refiner (refine.py) on these coarse probabilities
    extra: dict = field(default_factory=dict)


def add_training_arguments(parser) -> None:
    """The training options shared by ``gliomasuite train-segmentation`` and ``training.main``.

    Defaults are the shipped model's recipe (2 mm network, 64^3 patches, channels 8..128)."""
    d = TrainConfig(cache="", out="")
    parser.add_argument("--iterations", type=int, default=d.iterations, help="training steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per step")
    parser.add_argument("--patch", type=int, nargs=3, default=list(d.patch), help="patch size in network voxels")
    parser.add_argument("--downsample", type=int, default=d.downsample, choices=[1, 2],
                        help="2: the network sees 2 mm voxels (fast); 1: full 1 mm resolution")
    parser.add_argument("--channels", type=int, nargs="+", default=list(d.channels),
                        help="feature channels of the V-Net's levels (five for the 2 mm networks)")
    parser.add_argument("--decoder-convs", type=int, nargs="+", default=list(d.decoder_convs),
                        help="convolutions in each decoder level (one fewer than --channels)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (Adam, warm-up then cosine decay)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (patches, augmentation, initial weights)")
    parser.add_argument("--modality-dropout", type=float, default=d.modality_dropout,
                        help="chance that a patch loses T1, T2 or both (so studies without them still segment)")
    parser.add_argument("--class-ratios", type=float, nargs=4, default=list(d.class_ratios),
                        metavar=("BG", "NCR", "ED", "ET"),
                        help="how often a patch is centred on background, necrotic/non-enhancing core, edema and "
                             "enhancing tumour (relative)")
    parser.add_argument("--carvemix", type=float, default=d.carvemix,
                        help="share of training samples drawn from a brain with another training case's real tumour "
                             "pasted in (lesion mixing, CarveMix)")
    parser.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this much wall time")
    parser.add_argument("--device", default=d.device, help="auto, cpu, gpu or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                        help="steps between checkpoints (a rerun resumes from the last)")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="steps between log lines")
    parser.add_argument("--init-weights", metavar="NPZ",
                        help="fine-tune from these weights (e.g. a shipped network's .npz in gliomasuite/models) instead of random "
                             "initialisation")
    parser.add_argument("--norm", default=d.norm, choices=["instance", "cohort"],
                        help="cohort: fine-tune with the fixed normalisation statistics of --init-weights "
                             "(made by gliomasuite calibrate-segmentation), as inference uses them")
    parser.add_argument("--coarse", metavar="FOLDER",
                        help="train a 1 mm refinement network (gliomasuite/segmentation/refine.py) instead: FOLDER holds each "
                             "training case's coarse WT/TC/ET probabilities (CASE_coarse.npy.xz, uint8 0-255, on the "
                             "cache's crop), e.g. what the 2 mm networks gave; use with --downsample 1")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def config_from_arguments(args, cache, out, cases=None) -> TrainConfig:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return TrainConfig(cache=str(cache), out=str(out), cases=cases, iterations=args.iterations,
                       batch_size=args.batch_size, patch=tuple(args.patch), downsample=args.downsample,
                       channels=tuple(args.channels), decoder_convs=tuple(args.decoder_convs), lr=args.lr,
                       seed=args.seed, modality_dropout=args.modality_dropout, carvemix=args.carvemix,
                       class_ratios=tuple(args.class_ratios),
                       max_minutes=args.max_minutes,
                       device=args.device,
                       checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                       init_weights=args.init_weights, norm=args.norm, coarse=args.coarse)


def case_folds(cases: Sequence[str], folds: int, seed: int = 0) -> List[List[str]]:
    """Cases split into ``folds`` disjoint folds of near-equal size, the same for the same names and
    seed whatever order they come in (case-level cross-validation: a case is never in two folds)."""
    import random

    names = sorted(set(cases))
    if not 2 <= folds <= len(names):
        raise ValueError(f"cannot split {len(names)} cases into {folds} folds; use 2 to {len(names)} folds")
    random.Random(seed).shuffle(names)
    return [sorted(names[i::folds]) for i in range(folds)]
