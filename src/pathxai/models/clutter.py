"""A small CNN that finds and reads one digit among distractor strokes on a 64 x 64 canvas (suite ``digits-clutter``).

Trained here on canvases of the digits *train* split (:func:`pathxai.data.clutter.clutter_dataset`), evaluated on
canvases of the *test* split; deterministic for a seed and cached on disk like :mod:`pathxai.models.digits`. The
network ends in a global max-pool over an 8 x 8 grid of class evidence, so its decision is made where the digit is.

Measured (torch 2.13 CPU, seed 0): test accuracy 0.977 on one canvas per test digit (355 canvases), 0.099 on the same
canvases with the digit removed (chance 0.1); training takes about 40 s of CPU time on one thread (6000 canvases,
6 epochs, generation included).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.files import atomic_path
from ..data.clutter import CLUTTER_SIZE, clutter_dataset
from .digits import cache_dir
from .imagenet import ImageClassifier

_VERSION = 3
N_TRAIN = 6000
EPOCHS = 6


class ClutterCNN(nn.Module):
    """(N, 1, 64, 64) in [0, 1] -> (N, 10) logits.

    A 2x2 average pool (the digits are 8 x 8 images upsampled to 20-28 px, so 32 x 32 loses nothing of them),
    three 3x3 conv + batch-norm + ReLU layers with two 2x2 max-pools between them (receptive field 36 px of the
    input, more than a 28-px digit), a 1x1 conv to 10 class-evidence maps on an 8 x 8 grid, and a global max-pool
    over the grid. A flattened linear head instead of the max-pool reached only ~40 % on the test canvases.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.evidence = nn.Conv2d(64, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evidence(self.features(x)).amax(dim=(2, 3))


def evaluate_clutter_cnn(model: nn.Module, seed: int = 0, with_digit: bool = True) -> float:
    """Accuracy on the clutter canvases of the test split (one canvas per test digit, ``seed``).

    With ``with_digit=False`` the same canvases are drawn without the digit: accuracy should then be near chance.
    """
    x, y = clutter_dataset("test", None, seed=seed, with_digit=with_digit)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
    model.train(was_training)
    return float((pred == y).float().mean())


def train_clutter_cnn(n_train: int = N_TRAIN, epochs: int = EPOCHS, seed: int = 0,
                      evaluate: bool = True) -> tuple[ClutterCNN, dict]:
    """Train :class:`ClutterCNN` on ``n_train`` canvases of the train split.

    Returns (model in eval mode, {"test_accuracy", "no_digit_accuracy"} measured on the test split's canvases, or
    {} when ``evaluate`` is False).
    """
    x_train, y_train = clutter_dataset("train", n_train, seed=1000 + seed)
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            # one thread: the weights then do not depend on the host's thread count (parallel reductions in the
            # backward pass sum in a different order); this small network gains little from a second thread
            torch.set_num_threads(1)
            torch.manual_seed(seed)
            model = ClutterCNN()
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            steps = epochs * ((len(y_train) + 63) // 64)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
            g = torch.Generator().manual_seed(seed)
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(y_train), generator=g)
                for i in range(0, len(order), 64):
                    idx = order[i:i + 64]
                    # positions and scales are already random on every canvas: no further augmentation
                    loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    if not evaluate:
        return model, {}
    stats = {"test_accuracy": evaluate_clutter_cnn(model), "no_digit_accuracy": evaluate_clutter_cnn(model, 0, False)}
    return model, stats


def digits_clutter_cnn(retrain: bool = False) -> ImageClassifier:
    """The clutter CNN as an :class:`ImageClassifier` (inputs (N, 1, 64, 64) in [0, 1], classes "0".."9").

    Trained once (well under a minute on 2 CPU cores) and cached in :func:`cache_dir`; the wrapper carries
    ``test_accuracy`` and ``no_digit_accuracy`` (the same test canvases with the digit removed; chance is 0.1).
    """
    path = cache_dir() / f"digits_clutter_cnn_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"
    model = ClutterCNN()
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=True)
        stats = {k: float(state.pop(f"_{k}")) for k in ("test_accuracy", "no_digit_accuracy")}
        model.load_state_dict(state)
    else:
        model, stats = train_clutter_cnn()
        state = dict(model.state_dict())
        state.update({f"_{k}": torch.tensor(v) for k, v in stats.items()})
        with atomic_path(path) as tmp:  # concurrent workers never read half a file
            torch.save(state, tmp)
    wrapper = ImageClassifier(model, nn.Identity(), [str(i) for i in range(10)], (CLUTTER_SIZE, CLUTTER_SIZE),
                              "digits-clutter-cnn", gradcam_layer=model.features[-1], channels=1)
    wrapper.test_accuracy = stats["test_accuracy"]
    wrapper.no_digit_accuracy = stats["no_digit_accuracy"]
    return wrapper.eval()
