"""Training the recurrence network on series simulated from real baselines (``gliomasuite train-recurrence``).

Case-level split: validation series come only from baselines never simulated for training. Seeded
(simulation and training), resumable from ``RUN/checkpoint.pt`` after each epoch, with progress lines.
No model selection on the validation series: the last epoch is kept and the threshold is fixed at 0.5,
so the validation numbers are not chosen on the cases they report.
"""

import json
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GliomaSuiteError
from .dataset import SeriesSamples, simulate_cases, split_cases
from .network import RecurrenceNet, parameter_count
from .weights import save_recurrence_weights

Progress = Callable[[float, str], None]


def map_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus a soft Dice over the batch (an empty batch target leaves the BCE alone)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def _chunks(samples: SeriesSamples, batch: int, rng: Optional[np.random.Generator] = None) -> list:
    """Index lists of at most ``batch`` samples with the same number of visits (they stack into one tensor);
    shuffled within and across lengths when ``rng`` is given, else in order."""
    by_len = {}
    for index, (_, (j, k)) in enumerate(samples.items):
        by_len.setdefault(k - j, []).append(index)
    chunks = []
    for indices in by_len.values():
        order = rng.permutation(indices) if rng is not None else indices
        chunks += [order[i:i + batch] for i in range(0, len(order), batch)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    return chunks


def _batches(samples: SeriesSamples, batch: int, rng: np.random.Generator):
    """Shuffled training batches: (inputs, recurrence labels, next-visit maps) tensors."""
    for chunk in _chunks(samples, batch, rng):
        items = [samples.sample(int(i)) for i in chunk]
        yield (torch.from_numpy(np.stack([x for x, _, _ in items])),
               torch.tensor([y for _, y, _ in items], dtype=torch.float32),
               torch.from_numpy(np.stack([m for _, _, m in items])))


def predict_samples(model: RecurrenceNet, samples: SeriesSamples, batch: int = 4):
    """(probabilities, labels, maps, targets) for every sample, in ``samples.items`` order."""
    model.eval()
    probs = np.zeros(len(samples))
    labels = np.zeros(len(samples))
    maps, targets = [None] * len(samples), [None] * len(samples)
    with torch.no_grad():
        for chunk in _chunks(samples, batch):
            items = [samples.sample(j) for j in chunk]
            logits, rec = model(torch.from_numpy(np.stack([x for x, _, _ in items])))
            for j, (_, y, m), p, lm in zip(chunk, items, torch.sigmoid(rec).numpy(), torch.sigmoid(logits).numpy()):
                probs[j], labels[j], maps[j], targets[j] = p, y, lm[0].astype(np.float16), m[0] > 0
    return probs, labels, maps, targets


def train_recurrence(data_dir, out_dir, validation: Sequence[str], series_per_case: int = 16, epochs: int = 8,
                     batch: int = 4, learning_rate: float = 2e-3, seed: int = 0, threads: Optional[int] = None,
                     simulations: Optional[Path] = None, validate_every: int = 2, init_weights=None,
                     progress: Progress = lambda f, m: None) -> dict:
    """Simulate, then train; writes RUN/recurrence.npz, RUN/train-log.jsonl, RUN/checkpoint.pt. Returns a summary."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise GliomaSuiteError(f"The data folder {data_dir} does not exist; give --data a folder of labelled BraTS "
                               "cases (<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz).")
    cases = sorted(p.name for p in data_dir.iterdir() if (p / f"{p.name}_seg.nii.gz").is_file())
    if len(cases) < 2:
        raise GliomaSuiteError(f"The data folder {data_dir} holds {len(cases)} labelled case(s); training needs at "
                               "least two (one for training, one for validation).")
    train_cases, val_cases = split_cases(cases, validation)
    if not train_cases or not val_cases:
        raise GliomaSuiteError("Name at least one validation case with --validation and keep at least one for training.")
    if threads:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    sim_dir = Path(simulations) if simulations else out_dir / "simulations"
    progress(0.0, f"Simulating {series_per_case} series from each of {len(cases)} baselines into {sim_dir}")
    sim = lambda names, a, b: simulate_cases(data_dir, names, series_per_case, sim_dir,  # noqa: E731
                                             lambda f, m: progress(a + (b - a) * f, m))
    train = SeriesSamples(sim(train_cases, 0.0, 0.12), augment=True, seed=seed)
    val = SeriesSamples(sim(val_cases, 0.12, 0.15))

    torch.manual_seed(seed)
    model = RecurrenceNet()
    started_from = None
    if init_weights is not None:  # fine-tuning: start from a trained network's weights (our .npz, checked)
        from .weights import load_recurrence_weights

        initial, initial_meta = load_recurrence_weights(init_weights)
        leaked = sorted(set(initial_meta.get("train_cases", ())) & set(val_cases))
        if leaked:
            raise GliomaSuiteError(f"--init-weights {init_weights} was trained on {', '.join(leaked)}, which this run "
                                   "holds out for validation; start from weights that never saw them.")
        model.load_state_dict(initial.state_dict())
        started_from = {"file": Path(init_weights).name, "train_cases": initial_meta.get("train_cases"),
                        "epochs": initial_meta.get("epochs"), "series_per_case": initial_meta.get("series_per_case")}
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps_per_epoch = -(-len(train) // batch) + 2
    checkpoint = out_dir / "checkpoint.pt"
    log_path = out_dir / "train-log.jsonl"
    start_epoch = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)  # tensors and numbers only: never code
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch = int(state["epoch"])
        progress(0.15, f"Resuming after epoch {start_epoch} from {checkpoint}")
    rng = np.random.default_rng(seed + start_epoch)
    for epoch in range(start_epoch, epochs):
        model.train()
        t0, losses = time.time(), []
        for i, (x, y, target) in enumerate(_batches(train, batch, rng)):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate_at(learning_rate, (epoch + i / steps_per_epoch) / epochs)
            logits, rec = model(x)
            loss = map_loss(logits, target) + F.binary_cross_entropy_with_logits(rec, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            if i % 10 == 0:
                progress(0.15 + 0.85 * (epoch + i / steps_per_epoch) / epochs,
                         f"Epoch {epoch + 1}/{epochs}, batch {i + 1}/{steps_per_epoch}: loss {np.mean(losses[-10:]):.3f}")
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1)}
        if (epoch + 1) % validate_every == 0 or epoch + 1 == epochs:
            probs, labels, _, _ = predict_samples(model, val)
            entry.update(validation_auc=_auc(probs, labels), validation_accuracy=float(np.mean((probs >= 0.5) == labels)))
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch + 1}, checkpoint)
        progress(0.15 + 0.85 * (epoch + 1) / epochs, f"Epoch {epoch + 1}/{epochs}: loss {entry['train_loss']:.3f}"
                 + (f", validation AUC {entry['validation_auc']:.3f} (logged, not used to choose)"
                    if "validation_auc" in entry else ""))
    meta = {"train_cases": train_cases, "validation_cases": val_cases, "series_per_case": series_per_case,
            "epochs": epochs, "seed": seed, "parameters": parameter_count(model), "initial_weights": started_from}
    digest = save_recurrence_weights(model, out_dir / "recurrence.npz", meta)
    return {**meta, "weights": str(out_dir / "recurrence.npz"), "sha256": digest}


def learning_rate_at(peak: float, progress: float) -> float:
    """Linear warm-up over the first 5 % of training, then a cosine decay to zero: a function of how far
    training is, so a run resumed with more epochs simply continues the (stretched) curve."""
    if progress < 0.05:
        return peak * (0.1 + 0.9 * progress / 0.05)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95)))


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney); NaN when only one class is present."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(greater / (len(pos) * len(neg)))
