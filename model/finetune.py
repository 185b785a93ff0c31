"""Two-phase fine-tuning on the CPU: the head alone, then the top layers and the head at a lower rate.

Phase 1 ("head") trains only the final linear layer; the backbone is frozen. Phase 2 ("top") also unfreezes
the top layers (`model.architectures.top_modules`: ResNet layer4, EfficientNet-Lite0's last two blocks and
conv head). Each phase runs AdamW with its own cosine schedule (`CosineAnnealingLR`, stepped per batch, to 0
at the phase's end). Batch-norm layers stay in eval mode throughout: frozen layers must keep their running
statistics, and on the small corrections sets this is made for, batches of 16 would give noisy statistics
in the unfrozen ones too (their affine parameters still train). Dropout is active while training.

Deterministic for a seed: torch.manual_seed, a seeded generator for the loader's shuffle, num_workers=0.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.architectures import BuiltModel, top_modules
from model.metrics_log import MetricsLog
from model.training_data import Sample, TrainingImages, validation_batches
from shared_code.inference.model_card import ModelCard


@dataclass(frozen=True)
class FinetuneConfig:
    epochs_head: int = 2
    epochs_top: int = 2
    lr_head: float = 1e-3
    lr_top: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class EpochResult:
    phase: str
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


def _parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters()]


def freeze_all_but(module: nn.Module, trainable: Sequence[nn.Module]) -> list[nn.Parameter]:
    """requires_grad only for the parameters of `trainable`; returns them (each once)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    unique = list({id(p): p for p in _parameters(trainable)}.values())
    for parameter in unique:
        parameter.requires_grad_(True)
    return unique


def training_mode(module: nn.Module) -> None:
    """Train mode (dropout on) with every batch-norm layer kept in eval mode (running statistics)."""
    module.train()
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def validate(built: BuiltModel, samples: Sequence[Sample], card: ModelCard, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on serving-preprocessed validation images."""
    module = built.module
    module.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for batch, truth in validation_batches(samples, card, batch_size):
            logits, _ = module(torch.from_numpy(batch))
            target = torch.from_numpy(truth)
            losses.append(float(nn.functional.cross_entropy(logits, target, reduction="sum")))
            correct += int((logits.argmax(dim=1) == target).sum())
    return sum(losses) / len(samples), correct / len(samples)


def _loader(samples: Sequence[Sample], card: ModelCard, config: FinetuneConfig, phase_seed: int
            ) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(config.seed * 1000 + phase_seed)
    return torch.utils.data.DataLoader(TrainingImages(samples, card), batch_size=config.batch_size, shuffle=True,
                                       num_workers=0, generator=generator)


def run_phase(phase: str, built: BuiltModel, trainable: Sequence[nn.Module], epochs: int, lr: float,
              train: Sequence[Sample], validation: Sequence[Sample], card: ModelCard, config: FinetuneConfig,
              log: MetricsLog, first_step: int) -> list[EpochResult]:
    """One phase: AdamW over `trainable` with a per-batch cosine schedule; validate after every epoch."""
    if epochs <= 0:
        return []
    module = built.module
    parameters = freeze_all_but(module, trainable)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
    loader = _loader(train, card, config, phase_seed=first_step)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    loss_fn = nn.CrossEntropyLoss()
    results = []
    for epoch in range(epochs):
        started = time.perf_counter()
        lr_now = float(scheduler.get_last_lr()[0])
        training_mode(module)
        loss_sum, correct, seen = 0.0, 0, 0
        for images, target in loader:
            optimizer.zero_grad(set_to_none=True)
            logits, _ = module(images)
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(target)
            correct += int((logits.argmax(dim=1) == target).sum())
            seen += len(target)
        val_loss, val_accuracy = validate(built, validation, card, config.batch_size)
        result = EpochResult(phase, epoch + 1, loss_sum / seen, correct / seen, val_loss, val_accuracy, lr_now,
                             time.perf_counter() - started)
        results.append(result)
        log.log_metrics({"train_loss": result.train_loss, "train_accuracy": result.train_accuracy,
                         "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr_now,
                         f"{phase}_epoch_seconds": result.seconds}, step=first_step + epoch)
        print(f"[{phase}] epoch {epoch + 1}/{epochs}: train loss {result.train_loss:.4f} "
              f"acc {result.train_accuracy:.3f} | val loss {val_loss:.4f} acc {val_accuracy:.3f} "
              f"| lr {lr_now:.2e} | {result.seconds:.1f}s", flush=True)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    return results


def finetune(built: BuiltModel, train: Sequence[Sample], validation: Sequence[Sample], card: ModelCard,
             config: FinetuneConfig, log: MetricsLog) -> list[EpochResult]:
    """Phase 1 (head only), then phase 2 (top layers + head at the lower rate); the module ends in eval mode."""
    torch.manual_seed(config.seed)
    head: list[nn.Module] = [built.module.linear]
    history = run_phase("head", built, head, config.epochs_head, config.lr_head, train, validation, card, config,
                        log, first_step=0)
    history += run_phase("top", built, [*top_modules(built), *head], config.epochs_top, config.lr_top, train,
                         validation, card, config, log, first_step=config.epochs_head)
    return history


def history_rows(history: Sequence[EpochResult]) -> list[dict[str, Any]]:
    return [{"phase": r.phase, "epoch": r.epoch, "train_loss": round(r.train_loss, 5),
             "train_accuracy": round(r.train_accuracy, 4), "val_loss": round(r.val_loss, 5),
             "val_accuracy": round(r.val_accuracy, 4), "lr": r.lr, "seconds": round(r.seconds, 2)}
            for r in history]
