"""The four MLPerf Tiny (v1.x) reference architectures in PyTorch, with synthetic data to train them on.

Written from the benchmark's public descriptions; layer shapes follow the reference Keras models so
the exported int8 .tflite files have the same tensor sizes as the official ones (whose TFLite Micro
arenas the bench compares against). Accuracy is not the point: models train for seconds on
synthetic, class-dependent data with fixed seeds, just enough for non-trivial weights and BatchNorm
statistics.

    ic   ResNet-8, image classification, 3x32x32, 10 classes
    kws  DS-CNN (small), keyword spotting, 1x49x10 MFCCs, 12 classes
    vww  MobileNetV1 alpha 0.25, visual wake words, 3x96x96, 2 classes
    ad   FC autoencoder, anomaly detection, 640 inputs (5 frames x 128 mel bins), reconstruction
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, k, stride=1, padding=0, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU()] if relu else layers


class ResidualStage(nn.Module):
    """conv3x3(s) BN ReLU conv3x3 BN, plus the input (or its 1x1 strided projection), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        # TF's SAME padding: a strided 3x3 on an even size pads only bottom/right, so onnx2tf emits a
        # plain SAME conv as in the official model (PyTorch's symmetric padding would add a PAD op).
        first = [nn.ZeroPad2d((0, 1, 0, 1)), *_conv_bn_relu(cin, cout, 3, stride)] if stride == 2 else _conv_bn_relu(cin, cout, 3, 1, 1)
        self.body = nn.Sequential(*first, *_conv_bn_relu(cout, cout, 3, 1, 1, relu=False))
        # The reference projects with a biased 1x1 conv (no BN) whenever the shape changes.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny image classification: conv 16, stages 16/32/64 (strides 1/2/2), GAP, FC 10, softmax."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, 16, 3, 1, 1))
        self.stages = nn.Sequential(ResidualStage(16, 16, 1), ResidualStage(16, 32, 2), ResidualStage(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1)), 1)


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting, DS-CNN small: conv 64 10x4 s2, four depthwise-separable 64 blocks, GAP, FC 12.

    TF's SAME padding for the strided first conv is asymmetric (49x10 -> 25x5 pads rows 4/5 and
    columns 1/1), hence the explicit ZeroPad2d: onnx2tf emits it as a PAD that our passes fuse.
    """

    def __init__(self, num_classes: int = 12, width: int = 64, blocks: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.ZeroPad2d((1, 1, 4, 5)), *_conv_bn_relu(1, width, (10, 4), 2)]
        for _ in range(blocks):
            layers += _conv_bn_relu(width, width, 3, 1, 1, groups=width) + _conv_bn_relu(width, width, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.flatten(self.pool(self.features(x)), 1)), 1)


# MobileNetV1 (output channels at alpha 1, stride) after the first conv.
_MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    """MLPerf Tiny visual wake words: MobileNetV1 alpha 0.25 on 96x96x3, GAP, FC 2, softmax.

    Strided layers pad TF-style (SAME on an even input pads only bottom/right by one).
    """

    def __init__(self, num_classes: int = 2, alpha: float = 0.25):
        super().__init__()
        c = int(32 * alpha)
        layers: list[nn.Module] = [nn.ZeroPad2d((0, 1, 0, 1)), *_conv_bn_relu(3, c, 3, 2)]
        for cout, stride in _MOBILENET_V1:
            cout = int(cout * alpha)
            pad = nn.ZeroPad2d((0, 1, 0, 1)) if stride == 2 else nn.ZeroPad2d(1)
            layers += [pad, *_conv_bn_relu(c, c, 3, stride, groups=c), *_conv_bn_relu(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.flatten(self.pool(self.features(x)), 1)), 1)


class FCAutoencoder(nn.Module):
    """MLPerf Tiny anomaly detection: 640-128-128-128-128-8-128-128-128-128-640, Dense+BN+ReLU except the output."""

    def __init__(self, inputs: int = 640, hidden: int = 128, bottleneck: int = 8):
        super().__init__()
        sizes = [inputs] + [hidden] * 4 + [bottleneck] + [hidden] * 4
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    build: type
    sample_shape: tuple[int, ...]  # without batch, PyTorch layout
    num_classes: int | None  # None: a regression (reconstruction) model
    samples: int  # synthetic samples generated (70% train when labelled)
    train_epochs: int
    # TFLite Micro on the official int8 model: (minimal arena, its activation plan), from issue 4.
    official_tflm: tuple[int, int]


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("ad", "FC autoencoder (anomaly detection), 640 inputs", FCAutoencoder, (640,), None, 512, 5, (4632, 768)),
        ZooEntry("kws", "DS-CNN small (keyword spotting), 1x49x10", DSCNN, (1, 49, 10), 12, 480, 4, (24272, 16000)),
        ZooEntry("ic", "ResNet-8 (image classification), 3x32x32", ResNet8, (3, 32, 32), 10, 480, 4, (55984, 49152)),
        ZooEntry("vww", "MobileNetV1 0.25 (visual wake words), 3x96x96", MobileNetV1, (3, 96, 96), 2, 320, 3, (103672, 73728)),
    ]
}


def synthetic_data(entry: ZooEntry, seed: int = 0, samples: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Class prototypes plus noise (labelled), or smooth low-rank spectra plus noise (the autoencoder).

    Inputs are float32 in PyTorch layout; labels int64 or None.
    """
    rng = np.random.default_rng(seed)
    n = samples or entry.samples
    if entry.num_classes is None:
        # Spectrogram-like frames: a few smooth basis curves mixed at random, so there is structure to reconstruct.
        basis = np.cumsum(rng.standard_normal((6, *entry.sample_shape)), axis=-1) / 8.0
        x = rng.standard_normal((n, 6)) @ basis + 0.1 * rng.standard_normal((n, *entry.sample_shape))
        return x.astype(np.float32), None
    y = rng.integers(0, entry.num_classes, n)
    protos = rng.standard_normal((entry.num_classes, *entry.sample_shape))
    x = 0.6 * protos[y] + rng.standard_normal((n, *entry.sample_shape))
    return x.astype(np.float32), y.astype(np.int64)


def train(entry: ZooEntry, x: np.ndarray, y: np.ndarray | None, seed: int = 0, epochs: int | None = None,
          **model_kwargs) -> nn.Module:
    """A brief Adam run: cross entropy on the softmax outputs' logs (classifiers) or MSE (autoencoder).

    model_kwargs shrink a model for quick tests (e.g. hidden=32 for the autoencoder).
    """
    torch.manual_seed(seed)
    model = entry.build(**model_kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y) if y is not None else None
    model.train()
    for _ in range(epochs if epochs is not None else entry.train_epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - 1, 32):  # a last batch of one would break BatchNorm
            idx = order[start : start + 32]
            if len(idx) < 2:
                continue
            out = model(xt[idx])
            if yt is None:
                loss = nn.functional.mse_loss(out, xt[idx])
            else:
                loss = nn.functional.nll_loss(torch.log(out.clamp_min(1e-7)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save_npz(path: Path, x: np.ndarray, y: np.ndarray | None) -> None:
    """The `--data` format of edgeprune: x (N, C, H, W) or (N, F) float32, optional integer y (N,)."""
    import io

    from edgeprune.fileio import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, x=x) if y is None else np.savez(buf, x=x, y=y)
    write_bytes_atomic(Path(path), buf.getvalue())
