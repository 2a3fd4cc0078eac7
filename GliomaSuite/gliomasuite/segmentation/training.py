"""Training the V-Net on a cache of labelled cases.

Data stay on the training device as float16 volumes; each step draws patches with MONAI's
``RandCropByLabelClassesd`` (class ratios background : NCR : ED : ET = 1 : 1 : 1 : 2, so small
enhancing regions are found), then MONAI augmentation (affine, flips, intensity scale and shift,
and modality dropout of T1, T2 or both so a study with only T1ce and FLAIR still segments). With
``carvemix`` > 0 that share of patches comes from a brain with another case's real tumour pasted in
(:mod:`.carvemix`).
Loss: MONAI ``DiceCELoss`` (Dice + binary cross-entropy over the sigmoid regions WT, TC, ET) under
``DeepSupervisionLoss``.
With ``coarse`` (a folder of coarse region probabilities per case) it trains the 1 mm refinement
network of :mod:`.refine` instead: the coarse probabilities are three more input channels, the loss is
taken on logit(coarse) + the network's output, and the last layer starts at zero (no deep
supervision: the correction is only meaningful at full resolution).
Optimiser AdamW with polynomial decay. Everything random is drawn from ``seed`` (and the rank),
so the same command on the same hardware gives the same model.

With ``norm="cohort"`` (``--norm cohort``) training starts from calibrated weights (``gliomasuite
calibrate-segmentation``) and normalises with their fixed statistics throughout, exactly as inference
will; the statistics are never updated.

Checkpoints (``checkpoint.pt``, written atomically every ``checkpoint_every`` steps and when a
time budget runs out) hold model, optimiser and random states; ``resume`` continues exactly.
Under ``torchrun`` each process trains on its own patches and gradients are averaged
(DistributedDataParallel, NCCL on GPUs, gloo on CPUs).
"""

import json
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List

import numpy as np
import torch

from .cache import cached_cases, load_array, load_case
from .carvemix import carve_mix, donors_from
from .config import TrainConfig, add_training_arguments, config_from_arguments  # noqa: F401 (re-exported)
from .inference import choose_device
from .refine import COARSE_CHANNELS, IMAGE_CHANNELS, coarse_logit
from .vnet import VNet

#: Label values in the cache mapped to classes for patch sampling: 0 bg, 1 NCR, 2 ED, 3 ET.
_CLASS_OF_LABEL = {0: 0, 1: 1, 2: 2, 4: 3}
#: Channels (T1, T1ce, T2, FLAIR) zeroed together by modality dropout, drawn with equal chance: a study
#: with only T1ce and FLAIR, or missing one of T1/T2, must still segment.
_DROPPABLE = ([0], [2], [0, 2])


def seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def labels_to_regions(labels: torch.Tensor) -> torch.Tensor:
    """Class map (values 0 bg, 1 NCR, 2 ED, 3 ET), shape (1, ...) -> float (3, ...) WT, TC, ET."""
    wt = labels > 0
    tc = (labels == 1) | (labels == 3)
    et = labels == 3
    return torch.cat([wt, tc, et], dim=0).float()


def downsample_case(image: torch.Tensor, classes: torch.Tensor, factor: int):
    """Average-pool the image and turn the 1 mm truth into soft region fractions at the coarse grid.

    The class map used only to choose patch centres is max-pooled (ET wins), so a single enhancing
    voxel still attracts patches.
    """
    if factor == 1:
        return image, classes, labels_to_regions(classes)
    pool = torch.nn.functional.avg_pool3d
    pad = [0, (-image.shape[3]) % factor, 0, (-image.shape[2]) % factor, 0, (-image.shape[1]) % factor]
    image = torch.nn.functional.pad(image, pad)
    classes = torch.nn.functional.pad(classes, pad)
    targets = pool(labels_to_regions(classes)[None], factor)[0]
    coarse = torch.nn.functional.max_pool3d(classes[None].float(), factor)[0].to(torch.uint8)
    return pool(image[None], factor)[0], coarse, targets


def make_augmentation(config: TrainConfig, device: torch.device):
    from monai.transforms import (Compose, RandAffined, RandCropByLabelClassesd, RandFlipd,
                                  RandScaleIntensityd, RandShiftIntensityd)

    keys = ["image", "label", "target"] + (["coarse"] if config.coarse else [])
    return Compose([
        RandCropByLabelClassesd(keys=keys, label_key="label", spatial_size=list(config.patch),
                                ratios=list(config.class_ratios), num_classes=4, num_samples=1,
                                indices_key="indices", warn=False),
        RandAffined(keys=keys, prob=0.3, rotate_range=[0.26] * 3, scale_range=[0.15] * 3,
                    mode=("bilinear", "nearest", "bilinear", "bilinear")[: len(keys)], padding_mode="zeros",
                    device=device),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5, channel_wise=True),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5, channel_wise=True),
    ])


class PatchSampler:
    """Cases resident on the device and a MONAI pipeline that turns them into training batches."""

    def __init__(self, config: TrainConfig, cases: List[str], device: torch.device, rank_seed: int):
        from monai.transforms import ClassesToIndices, SpatialPad

        self.config = config
        self.device = device
        self.rng = np.random.RandomState(rank_seed)
        self.pad = SpatialPad(spatial_size=list(config.patch))
        indexer = ClassesToIndices(num_classes=4)
        if config.coarse and config.downsample != 1:
            raise ValueError("a refiner (--coarse) works on 1 mm voxels: give --downsample 1")
        if config.coarse and config.carvemix:
            raise ValueError("lesion mixing (--carvemix) has no coarse probabilities for the pasted tumour; "
                             "train a refiner without it")
        self.items = []
        for name in cases:
            image, labels = load_case(config.cache, name)
            if config.coarse:
                coarse = load_array(Path(config.coarse) / f"{name}_coarse.npy.xz")
                if coarse.shape != (COARSE_CHANNELS,) + labels.shape:
                    raise ValueError(f"{name}: coarse probabilities of shape {coarse.shape}, not on the cache's crop")
            classes = np.zeros(labels.shape, dtype=np.uint8)
            for value, cls in _CLASS_OF_LABEL.items():
                classes[labels == value] = cls
            image_t, classes_t, targets_t = downsample_case(torch.from_numpy(image),
                                                            torch.from_numpy(classes)[None], config.downsample)
            image_t = self.pad(image_t).to(device, torch.float16)
            classes_t = self.pad(classes_t).to(device)
            targets_t = self.pad(targets_t).to(device, torch.float16)
            indices = indexer(classes_t.cpu())
            self.items.append({"image": image_t, "label": classes_t, "target": targets_t, "indices": indices})
            if config.coarse:  # its own key: moved with the image, but not rescaled or shifted like it
                self.items[-1]["coarse"] = self.pad(torch.from_numpy(coarse)).to(device)
        self.augment = make_augmentation(config, device)
        self.augment.set_random_state(seed=rank_seed)
        self.donors = donors_from(self.items, list(cases)) if config.carvemix else []

    def batch(self):
        images, labels = [], []
        for _ in range(self.config.batch_size):
            item = self.items[self.rng.randint(len(self.items))]
            data = {"image": item["image"].float(), "label": item["label"], "target": item["target"].float(),
                    "indices": item["indices"]}
            if "coarse" in item:
                data["coarse"] = item["coarse"].float() / 255.0
            if self.donors and self.rng.rand() < self.config.carvemix:
                mixed = carve_mix(data, self.donors[self.rng.randint(len(self.donors))], self.rng)
                data = mixed if mixed is not None else data
            sample = self.augment(data)
            sample = sample[0] if isinstance(sample, list) else sample
            image = torch.as_tensor(sample["image"])
            if self.config.modality_dropout and self.rng.rand() < self.config.modality_dropout:
                image = image.clone()
                image[_DROPPABLE[self.rng.randint(len(_DROPPABLE))]] = 0.0  # T1, T2 or both missing
            if "coarse" in sample:
                image = torch.cat([image, torch.as_tensor(sample["coarse"]).clamp(0, 1)])
            images.append(image)
            labels.append(torch.as_tensor(sample["target"]))
        return (torch.stack(images).to(self.device, non_blocking=True),
                torch.stack(labels).to(self.device).clamp_(0, 1))


def build_model(config: TrainConfig) -> VNet:
    refiner = bool(config.coarse)
    encoder_convs = tuple(config.encoder_convs)[: len(config.channels)]
    encoder_convs += (2,) * (len(config.channels) - len(encoder_convs))
    model = VNet(in_channels=IMAGE_CHANNELS + (COARSE_CHANNELS if refiner else 0), out_channels=3,
                 channels=config.channels, encoder_convs=encoder_convs, decoder_convs=config.decoder_convs,
                 deep_supervision=not refiner, norm=config.norm)
    if refiner:  # a correction of the coarse logits that starts at none
        torch.nn.init.zeros_(model.heads[0].weight)
        torch.nn.init.zeros_(model.heads[0].bias)
    return model


def _freeze_statistics(model: VNet) -> None:
    """With ``norm="cohort"``, normalise with the fixed statistics while training, as inference does
    (the layers' affine weights still learn; the statistics are never updated)."""
    for m in model.modules():
        if isinstance(m, torch.nn.InstanceNorm3d) and m.track_running_stats:
            m.eval()


def _initialise_from(model: VNet, path) -> None:
    """Copy weights saved by :func:`export_checkpoint` into ``model`` (fine-tuning); shapes must match."""
    from .weights import load_weights

    source, _ = load_weights(path)
    target = model.state_dict()
    mismatched = [k for k, v in source.state_dict().items() if k not in target or target[k].shape != v.shape]
    if mismatched or set(target) != set(source.state_dict()):
        raise ValueError(f"{path} does not fit this network configuration (e.g. {(mismatched or ['missing keys'])[0]}); "
                         "give the same --channels/--decoder-convs it was trained with")
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})


def _poly_lr(config: TrainConfig, step: int) -> float:
    return config.lr * (1 - step / config.iterations) ** 0.9


def train(config: TrainConfig, resume: bool = False, report: Callable[[float, str], None] = None) -> Path:
    """Train; returns the output folder with ``checkpoint.pt`` and ``train_log.jsonl``."""
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = choose_device(config.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(config.seed + rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = config.cases or cached_cases(config.cache)
    if rank == 0:
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=1))

    model = build_model(config)
    if config.init_weights:
        _initialise_from(model, config.init_weights)
    elif config.norm == "cohort":
        raise ValueError("norm 'cohort' fine-tunes a calibrated network: give --init-weights (a file written by "
                         "gliomasuite calibrate-segmentation)")
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    sampler = PatchSampler(config, cases, device, rank_seed=config.seed * 1000 + rank + step)
    if resume and checkpoint_path.exists():
        torch.set_rng_state(state["torch_rng"].cpu())
    network = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = DeepSupervisionLoss(DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5), weight_mode="exp")
    use_amp = config.amp and device.type == "cuda"
    start = time.monotonic()
    log_file = open(out / "train_log.jsonl", "a") if rank == 0 else None
    running = []

    def save_checkpoint():
        if rank != 0:
            return
        tmp = checkpoint_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(config))}, tmp)
        tmp.replace(checkpoint_path)

    network.train()
    _freeze_statistics(model)
    while step < config.iterations:
        for group in optimizer.param_groups:
            group["lr"] = _poly_lr(config, step)
        images, targets = sampler.batch()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = network(images)
        if config.coarse:
            outputs = [outputs.float() + coarse_logit(images[:, IMAGE_CHANNELS:])]
        loss = loss_fn([o.float() for o in outputs], targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()
        step += 1
        running.append(float(loss.detach()))
        if step % config.log_every == 0 or step == config.iterations:
            elapsed = time.monotonic() - start
            record = {"step": step, "loss": round(float(np.mean(running)), 4), "lr": _poly_lr(config, step - 1),
                      "elapsed_s": round(elapsed, 1)}
            running = []
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if report and rank == 0:
                report(step / config.iterations, f"step {step}/{config.iterations}, loss {record['loss']:.4f}")
        if step % config.checkpoint_every == 0:
            save_checkpoint()
        if config.max_minutes and (time.monotonic() - start) > config.max_minutes * 60:
            break
    save_checkpoint()
    if log_file:
        log_file.close()
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return out


def main(argv=None):
    """Entry for ``python -m gliomasuite.segmentation.training`` (and torchrun) on a prepared cache."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the V-Net on a training cache")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", nargs="*", help="training cases (default: all in the cache)")
    add_training_arguments(parser)
    parser.add_argument("--export", help="also write the trained weights (.npz, float16) here")
    args = parser.parse_args(argv)
    config = config_from_arguments(args, args.cache, args.out, args.cases or None)
    out = train(config, resume=args.resume,
                report=lambda f, m: print(f"[{f * 100:5.1f}%] {m}", flush=True))
    if args.export and int(os.environ.get("RANK", "0")) == 0:
        print("exported", export_checkpoint(out / "checkpoint.pt", args.export), flush=True)


def export_checkpoint(checkpoint, path) -> str:
    """Shipped weights (see :mod:`.weights`) from a training checkpoint; returns their SHA-256."""
    from .weights import save_weights

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = TrainConfig(**json.loads(state["config"]))
    model = build_model(config)
    model.load_state_dict(state["model"])
    metadata = {"training_steps": int(state["step"]), "train_config": asdict(config),
                "optional_modalities": ["t1", "t2"] if config.modality_dropout > 0 else []}
    if config.coarse:
        metadata["refines"] = "logit of the coarse WT/TC/ET probabilities (input channels 5-7), see refine.py"
    return save_weights(model, path, metadata, input_downsample=config.downsample)


if __name__ == "__main__":
    main()
