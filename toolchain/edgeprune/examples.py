"""Built-in example models, trained on built-in data in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgeprune.data import load_digits_dataset
from edgeprune.fileio import write_bytes_atomic


class DigitsCNN(nn.Module):
    """A 14k-parameter CNN for 1x8x8 digits: three 3x3 convs with BatchNorm, global pooling, a linear classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def train_digits_cnn(epochs: int = 20, seed: int = 0, quiet: bool = False) -> tuple[DigitsCNN, float]:
    """Train DigitsCNN on the digits train split; returns the model and its test accuracy."""
    from edgeprune.front.finetune import finetune, predict

    torch.manual_seed(seed)
    data = load_digits_dataset()
    model = DigitsCNN()
    finetune(model, data.x_train, data.y_train, epochs=epochs, lr=3e-3, seed=seed, description="train digits CNN", quiet=quiet)
    accuracy = float((predict(model, data.x_test).argmax(1) == data.y_test).mean())
    return model, accuracy


def save_torchscript(model: nn.Module, path: str | Path) -> int:
    """Save as TorchScript (loadable without trusting pickled code); returns the file size."""
    import io

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model.eval()), buf)
    write_bytes_atomic(Path(path), buf.getvalue())
    return len(buf.getvalue())


EXAMPLES = {"digits": "DigitsCNN on scikit-learn's 8x8 digits (1x8x8 input, 10 classes)"}
