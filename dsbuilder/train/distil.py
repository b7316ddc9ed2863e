"""What the bundled students share: distillation from the teacher's soft labels, the epoch loop that
keeps the best epoch, scores against the trivial prior, and writing the model files.

A student sees its own input (audio for :mod:`dsbuilder.train.speech`, face crops for
:mod:`dsbuilder.train.fer`) and learns the teacher's distribution ``p``: the loss is
``T² · KL(p_T ‖ softmax(z / T))`` with ``p_T ∝ p^(1/T)`` (Hinton et al.; the same as dividing the
teacher's logits by T). Its figures are always given next to a student that answers the training
items' mean distribution whatever the input: a student that does not beat that has learnt nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from dsbuilder.errors import StageError
from dsbuilder.workspace import atomic_path, atomic_write_bytes


class TrainingError(StageError):
    """The manifests do not hold what training needs (no clips, no audio, no training split)."""


@dataclass(frozen=True)
class DistilOptions:
    """The options every student has; a trainer's own options subclass it and name the trainer
    (``TRAINER``: its key in ``TRAIN_PARAMS``, where every default and range is)."""

    TRAINER: ClassVar[str] = ""

    epochs: int
    lr: float
    batch_size: int
    temperature: float
    seed: int

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None):
        return options(cls, cls.TRAINER, values)

    def fit_args(self) -> dict[str, Any]:
        """The keyword arguments of :func:`fit`."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "temperature": self.temperature, "seed": self.seed}


def options(cls: type, trainer: str, values: Mapping[str, Any] | None) -> Any:
    """``cls`` (a dataclass of the trainer's options) from ``values`` over the defaults of
    ``TRAIN_PARAMS[trainer]``; None values take the default. Unknown names and values outside a
    parameter's choices are errors."""
    from dataclasses import fields

    from dsbuilder.config import TRAIN_PARAMS

    params = TRAIN_PARAMS[trainer]
    unknown = set(values or {}) - set(params)
    if unknown:
        raise StageError(f"unknown {trainer} training option(s): {', '.join(sorted(unknown))}",
                         f"the options are: {', '.join(params)}")
    merged = {k: p.default for k, p in params.items()}
    merged.update({k: v for k, v in (values or {}).items() if v is not None})
    for name, p in params.items():
        if p.choices and merged[name] not in p.choices:
            raise StageError(f"{name} must be {p.describe()}, got {merged[name]!r}")
    return cls(**{f.name: merged[f.name] for f in fields(cls)})


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``p^(1/T)`` renormalised: the teacher's logits divided by T."""
    logp = np.log(np.clip(probs, 1e-8, 1.0)) / temperature
    e = np.exp(logp - logp.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p ‖ q) over rows, nats."""
    p, q = np.clip(p, 1e-8, 1.0), np.clip(q, 1e-8, 1.0)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def scores(teacher: np.ndarray, student: np.ndarray, prior: np.ndarray) -> dict[str, float]:
    """How close the student is to the teacher, next to always answering the train prior."""
    if not len(teacher):
        return {}
    trivial = np.repeat(prior[None], len(teacher), axis=0)
    return {"items": len(teacher), "kl": kl(teacher, student), "kl_prior": kl(teacher, trivial),
            "argmax_agreement": float(np.mean(teacher.argmax(1) == student.argmax(1))),
            "argmax_agreement_prior": float(np.mean(teacher.argmax(1) == prior.argmax()))}


def fit(model, targets: np.ndarray, batch: Callable[[np.ndarray, Any], Any],
        log_probs: Callable[[Any, Any], Any], held_kl: Callable[[Any], float] | None, *,
        epochs: int, lr: float, batch_size: int, temperature: float, seed: int,
        desc: str, progress: bool) -> tuple[list[dict[str, float]], int]:
    """Train ``model`` on ``len(targets)`` items; load the best epoch's weights into it.

    ``batch(indices, rng)``: the input tensor of those training items; ``log_probs(model, x)``: the
    student's log-probabilities at temperature T for input ``x`` (its logits / T, log-softmaxed);
    ``held_kl(model)``: KL to the teacher on the held-out items (None: none; the best epoch is then the
    one with the lowest training loss). Returns the per-epoch history and the best epoch (1-based).
    """
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    soft = torch.from_numpy(soften(targets, temperature))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress):
        model.train()
        order = rng.permutation(len(targets))
        total = 0.0
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            loss = torch.nn.functional.kl_div(log_probs(model, batch(idx, rng)), soft[idx],
                                              reduction="batchmean") * temperature ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch + 1, "train_loss": total / len(order)}
        if held_kl is not None:
            model.eval()
            row["held_out_kl"] = held_kl(model)
        history.append(row)
        key = row.get("held_out_kl", row["train_loss"])
        if best is None or key < best[0]:
            best = (key, epoch + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    return history, best[1]


def rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


def write_model(out: Path, model, config: Mapping[str, Any], metrics: Mapping[str, Any],
                card: str) -> None:
    """``model.pt`` (a state dict), ``config.json``, ``metrics.json`` and ``model_card.md``."""
    import torch

    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=1) + "\n").encode())
    atomic_write_bytes(out / "metrics.json",
                       (json.dumps(rounded(metrics), indent=1) + "\n").encode())
    atomic_write_bytes(out / "model_card.md", card.encode())


def score_table(metrics: Mapping[str, Any], splits: Sequence[str], unit: str) -> list[str]:
    """The model card's table of :func:`scores` per split."""
    lines = [f"| split | {unit} | KL | KL prior | argmax agreement | agreement prior |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in splits:
        m = metrics.get(s)
        if m:
            lines.append(f"| {s} | {m['items']} | {m['kl']:.3f} | {m['kl_prior']:.3f} | "
                         f"{m['argmax_agreement']:.2f} | {m['argmax_agreement_prior']:.2f} |")
    return lines
