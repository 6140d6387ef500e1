"""A small CNN trained here, in seconds, on scikit-learn's digits; deterministic and cached on disk."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..core.files import atomic_path
from ..data.digits import DIGITS_SIZE, digits
from .imagenet import ImageClassifier

_VERSION = 2


def cache_dir() -> Path:
    """Where trained models are cached: ``$PATHXAI_CACHE`` or ``~/.cache/pathxai``."""
    path = Path(os.environ.get("PATHXAI_CACHE", Path.home() / ".cache" / "pathxai"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class DigitsCNN(nn.Module):
    """(N, 1, 28, 28) in [0, 1] -> (N, 10) logits: three 3x3 conv layers, two average pools, one linear layer.

    Average rather than max pooling: max pooling over the flat plateaus of upsampled digits has exact ties, where the
    gradient jumps between tied inputs on float32 rounding noise and gradient methods stop being reproducible
    across batch sizes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def train_digits_cnn(epochs: int = 12, seed: int = 0) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` on the train split; returns (model in eval mode, test accuracy)."""
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(y_train), generator=g)
            for i in range(0, len(order), 64):
                idx = order[i:i + 64]
                # small random shifts make the model rely on strokes, not on absolute position
                shift = torch.randint(-2, 3, (2,), generator=g).tolist()
                batch = torch.roll(x_train[idx], shifts=shift, dims=(2, 3))
                loss = nn.functional.cross_entropy(model(batch), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return model, accuracy


def digits_cnn(retrain: bool = False) -> ImageClassifier:
    """The digits CNN as an :class:`ImageClassifier` (inputs (N, 1, 28, 28) in [0, 1], classes "0".."9").

    Trained once (a few seconds on 2 CPU cores) and cached in :func:`cache_dir`; ``meta`` has its test accuracy.
    """
    path = cache_dir() / f"digits_cnn_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"
    model = DigitsCNN()
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=True)
        accuracy = float(state.pop("_test_accuracy"))
        model.load_state_dict(state)
    else:
        model, accuracy = train_digits_cnn()
        state = dict(model.state_dict())
        state["_test_accuracy"] = torch.tensor(accuracy)
        with atomic_path(path) as tmp:  # concurrent test workers never read half a file
            torch.save(state, tmp)
    wrapper = ImageClassifier(model, nn.Identity(), [str(i) for i in range(10)], (DIGITS_SIZE, DIGITS_SIZE),
                              "digits-cnn", gradcam_layer=model.features[6], channels=1)
    wrapper.test_accuracy = accuracy
    return wrapper.eval()
