"""Synthetic "speech commands": tones and chirps in noise, and a small 1-D CNN trained on them in seconds.

Each of the four commands is a 512-sample (64 ms at a nominal 8 kHz) Hann-windowed waveform: a low tone, a high tone,
an up-chirp and a down-chirp. A training clip is ``T = 1024`` samples of white noise (std 0.05) with one command at a
random offset and amplitude. The two-command clips of the paper's 'Right' + 'Cat' example put command ``a`` in the
first half and command ``b`` in the second: explaining class ``a`` must highlight the first half, class ``b`` the
second (:func:`two_command_clips` returns those halves as ground-truth masks).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.files import atomic_path
from .digits import cache_dir

SAMPLE_RATE = 8000
CLIP = 1024
SEGMENT = 512
COMMANDS = ("low-tone", "high-tone", "up-chirp", "down-chirp")
_VERSION = 1


def command_waveform(c: int, amplitude: float = 1.0) -> torch.Tensor:
    """(SEGMENT,) waveform of command ``c``."""
    t = torch.arange(SEGMENT, dtype=torch.float64) / SAMPLE_RATE
    dur = SEGMENT / SAMPLE_RATE
    if c == 0:
        phase = 2 * math.pi * 400 * t
    elif c == 1:
        phase = 2 * math.pi * 1800 * t
    else:
        f0, f1 = (700.0, 1300.0) if c == 2 else (3000.0, 2300.0)
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur))
    window = torch.hann_window(SEGMENT, periodic=False, dtype=torch.float64)
    return (amplitude * window * torch.sin(phase)).float()


def command_clips(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` single-command clips: (x (n, 1, CLIP), labels (n,), ground-truth masks (n, CLIP) bool)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COMMANDS), (n,), generator=g)
    x = 0.05 * torch.randn(n, 1, CLIP, generator=g)
    masks = torch.zeros(n, CLIP, dtype=torch.bool)
    offsets = torch.randint(0, CLIP - SEGMENT + 1, (n,), generator=g)
    amps = 0.5 + 0.5 * torch.rand(n, generator=g)
    for i in range(n):
        o = int(offsets[i])
        x[i, 0, o:o + SEGMENT] += command_waveform(int(labels[i]), float(amps[i]))
        masks[i, o:o + SEGMENT] = True
    return x, labels, masks


def two_command_clips(pairs: list[tuple[int, int]], seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips with command ``a`` in the first half and ``b`` in the second, for each ``(a, b)`` in ``pairs``.

    Returns:
        x (n, 1, CLIP), classes (n, 2) = (a, b), masks (n, 2, CLIP) bool: the half of each command.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(pairs)
    x = 0.05 * torch.randn(n, 1, CLIP, generator=g)
    masks = torch.zeros(n, 2, CLIP, dtype=torch.bool)
    for i, (a, b) in enumerate(pairs):
        x[i, 0, :SEGMENT] += command_waveform(a, 0.8)
        x[i, 0, SEGMENT:] += command_waveform(b, 0.8)
        masks[i, 0, :SEGMENT] = True
        masks[i, 1, SEGMENT:] = True
    return x, torch.tensor(pairs), masks


class CommandsCNN(nn.Module):
    """(N, 1, 1024) waveform -> (N, 4) logits: three strided 1-D convolutions, softplus, global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 31, stride=2, padding=15), nn.Softplus(),
            nn.Conv1d(16, 16, 15, stride=2, padding=7), nn.Softplus(),
            nn.Conv1d(16, 32, 9, stride=2, padding=4), nn.Softplus(),
        )
        self.classifier = nn.Linear(32, len(COMMANDS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(-1))


class AudioClassifier(nn.Module):
    """Wrapper carrying ``input_shape`` (1, CLIP), ``class_names`` and ``model_name`` like the image models."""

    def __init__(self, net: CommandsCNN, accuracy: float) -> None:
        super().__init__()
        self.net = net
        self.input_shape = (1, CLIP)
        self.class_names = list(COMMANDS)
        self.model_name = "commands-cnn"
        self.test_accuracy = accuracy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_commands_cnn(n_train: int = 1000, epochs: int = 8, seed: int = 0) -> tuple[CommandsCNN, float]:
    """Train :class:`CommandsCNN` on single-command clips and, for a third of the data, two-command clips with soft
    labels (1/2, 1/2); returns (model in eval mode, accuracy on 400 fresh single-command clips)."""
    x1, y1, _ = command_clips(n_train - n_train // 3, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    a = torch.randint(0, len(COMMANDS), (n_train // 3,), generator=g)
    b = (a + torch.randint(1, len(COMMANDS), (n_train // 3,), generator=g)) % len(COMMANDS)
    x2, _, _ = two_command_clips(list(zip(a.tolist(), b.tolist())), seed=seed + 3)
    x = torch.cat([x1, x2])
    y = torch.cat([nn.functional.one_hot(y1, len(COMMANDS)).float(),
                   (nn.functional.one_hot(a, len(COMMANDS)) + nn.functional.one_hot(b, len(COMMANDS))).float() / 2])
    xt, yt, _ = command_clips(400, seed=seed + 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CommandsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n_train, generator=g)
            for i in range(0, n_train, 32):
                idx = order[i:i + 32]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return model, acc


def commands_cnn(retrain: bool = False) -> AudioClassifier:
    """The commands CNN (inputs (N, 1, 1024) waveforms), trained once (seconds) and cached atomically on disk."""
    path = cache_dir() / f"commands_cnn_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"
    net = CommandsCNN()
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=True)
        acc = float(state.pop("_test_accuracy"))
        net.load_state_dict(state)
    else:
        net, acc = train_commands_cnn()
        state = dict(net.state_dict())
        state["_test_accuracy"] = torch.tensor(acc)
        with atomic_path(path) as tmp:  # concurrent workers never read half a file
            torch.save(state, tmp)
    return AudioClassifier(net, acc).eval()
