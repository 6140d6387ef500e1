"""``clutter-vit``: a small vision transformer that reads one digit among distractor strokes (suite ``digits-clutter``).

The transformer counterpart of :mod:`pathxai.models.clutter` (same task, same training canvases, same test
canvases), so that every image method can be measured on a CNN and a ViT side by side. It is a real library ViT --
transformers' ``ViTForImageClassification`` (pre-norm blocks, a CLS token read by the linear head, learned position
embeddings, fused scaled-dot-product attention) -- because timm needs torchvision, which the CPU torch of the default
environment does not have; timm's ViT and transformers' ViT are the same architecture family.

Architecture: 64 x 64 grey input cut into 8 x 8 patches (an 8 x 8 grid, 64 patch tokens + CLS), width 64, 6 blocks
of 4 heads, MLP width 128. Trained here on fresh canvases of the digits *train* split every epoch (the canvases are
themselves the augmentation: random digit position and scale, random distractors), plus a random gain on the ink;
deterministic for a seed (one thread) and cached on disk like the CNN.

Measured (torch 2.13 CPU, transformers 5.24, seed 0): see :data:`MEASURED`.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..core.files import atomic_path
from ..data.clutter import CLUTTER_SIZE, clutter_dataset
from .clutter import evaluate_clutter_cnn
from .digits import cache_dir
from .imagenet import ImageClassifier

_VERSION = 1
N_TRAIN = 6000
EPOCHS = 30
BATCH = 64
PATCH = 8
WIDTH = 64
DEPTH = 6
HEADS = 4
LR = 2e-3
WEIGHT_DECAY = 0.05


class HFLogits(nn.Module):
    """A transformers image classifier (``pixel_values -> ImageClassifierOutput``) as a plain ``(N, C, H, W) ->
    (N, K)`` logits module, the output every pathxai method needs.

    Attributes:
        model: the wrapped transformers model (its module names appear under ``model.``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def clutter_vit_config(**overrides: Any) -> Any:
    """The ``ViTConfig`` of ``clutter-vit`` (keyword ``overrides`` replace fields, e.g. for tiny test models)."""
    from transformers import ViTConfig

    fields: dict[str, Any] = dict(image_size=CLUTTER_SIZE, patch_size=PATCH, num_channels=1, hidden_size=WIDTH,
                                  num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=2 * WIDTH,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=10,
                                  qkv_bias=True)
    fields.update(overrides)
    return ViTConfig(**fields)


def build_vit(config: Any | None = None, seed: int = 0) -> HFLogits:
    """A freshly initialised (seeded) ``ViTForImageClassification`` wrapped in :class:`HFLogits`."""
    try:
        from transformers import ViTForImageClassification
    except ImportError as err:  # pragma: no cover - transformers is in the `text` extra
        raise ImportError("clutter-vit needs transformers: `pip install transformers` (pathxai[text])") from err
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = ViTForImageClassification(config if config is not None else clutter_vit_config())
    return HFLogits(net)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random gain in [0.6, 1] per canvas: the model must not rely on the exact ink intensity."""
    gain = 0.6 + 0.4 * torch.rand(x.shape[0], 1, 1, 1, generator=g)
    return x * gain


def train_clutter_vit(n_train: int = N_TRAIN, epochs: int = EPOCHS, seed: int = 0, evaluate: bool = True,
                      config: Any | None = None, lr: float = LR) -> tuple[HFLogits, dict[str, float]]:
    """Train the ViT on ``n_train`` fresh canvases of the train split per epoch.

    Returns (model in eval mode, stats): ``train_seconds`` always; with ``evaluate`` also ``test_accuracy`` and
    ``no_digit_accuracy`` on the test split's canvases (the CNN's evaluation, :func:`evaluate_clutter_cnn`).
    """
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        with torch.random.fork_rng():
            # one thread: the weights then do not depend on the host's thread count (see the clutter CNN)
            torch.set_num_threads(1)
            model = build_vit(config, seed)
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
            no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=lr)
            steps = epochs * ((n_train + BATCH - 1) // BATCH)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
            g = torch.Generator().manual_seed(seed)
            model.train()
            for epoch in range(epochs):
                # fresh canvases every epoch (train split digits, new positions, scales and distractors)
                x_train, y_train = clutter_dataset("train", n_train, seed=100_000 + 1000 * seed + epoch)
                order = torch.randperm(len(y_train), generator=g)
                for i in range(0, len(order), BATCH):
                    idx = order[i:i + BATCH]
                    loss = nn.functional.cross_entropy(model(_augment(x_train[idx], g)), y_train[idx],
                                                       label_smoothing=0.1)
                    opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    stats = {"train_seconds": time.perf_counter() - start}
    if evaluate:
        stats["test_accuracy"] = evaluate_clutter_cnn(model)
        stats["no_digit_accuracy"] = evaluate_clutter_cnn(model, 0, False)
    return model, stats


def _cache_path() -> Any:
    import transformers

    tf_major = transformers.__version__.split(".")[0]  # state-dict key names changed between transformers 4 and 5
    return cache_dir() / f"clutter_vit_v{_VERSION}_torch{torch.__version__.split('+')[0]}_tf{tf_major}.pt"


def gradcam_layer_of(net: HFLogits) -> nn.Module:
    """The norm before attention of the last block (the Grad-CAM layer; see :mod:`pathxai.methods.gradcam`)."""
    from ..methods.gradcam import pre_attention_norm, transformer_blocks

    return pre_attention_norm(*transformer_blocks(net)[-1])[1]


def clutter_vit(retrain: bool = False) -> ImageClassifier:
    """The clutter ViT as an :class:`ImageClassifier` (inputs (N, 1, 64, 64) in [0, 1], classes "0".."9").

    Trained once (a few CPU minutes on one thread) and cached in :func:`cache_dir`; the wrapper carries
    ``test_accuracy``, ``no_digit_accuracy`` (the same test canvases with the digit removed; chance is 0.1) and
    ``train_seconds``; ``gradcam_layer`` is the last block's ``layernorm_before``.
    """
    path = _cache_path()
    keys = ("test_accuracy", "no_digit_accuracy", "train_seconds")
    if path.exists() and not retrain:
        net = build_vit()
        state = torch.load(path, map_location="cpu", weights_only=True)
        stats = {k: float(state.pop(f"_{k}")) for k in keys}
        net.load_state_dict(state)
    else:
        net, stats = train_clutter_vit()
        state = dict(net.state_dict())
        state.update({f"_{k}": torch.tensor(stats[k]) for k in keys})
        with atomic_path(path) as tmp:  # concurrent workers never read half a file
            torch.save(state, tmp)
    wrapper = ImageClassifier(net, nn.Identity(), [str(i) for i in range(10)], (CLUTTER_SIZE, CLUTTER_SIZE),
                              "clutter-vit", gradcam_layer=gradcam_layer_of(net), channels=1)
    for k in keys:
        setattr(wrapper, k, stats[k])
    return wrapper.eval()
