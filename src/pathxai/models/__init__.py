"""Models that need no download: EfficientNet-Lite0 (ImageNet, from PyPI wheels) and CNNs trained here."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .audio import AudioClassifier, CommandsCNN, command_clips, commands_cnn, two_command_clips
from .text import SentimentCNN, TextClassifier, sentiment_cnn, sentiment_corpus
from .clutter import ClutterCNN, digits_clutter_cnn, train_clutter_cnn
from .digits import DigitsCNN, cache_dir, digits_cnn, train_digits_cnn
from .encoders import (ENCODERS, ImageEncoder, SentenceEncoder, clutter_simclr, digits_cnn_features,
                       efficientnet_lite0_features, minilm_sentence_encoder)
from .imagenet import (ImageClassifier, Normalize, class_index, efficientnet_lite0, image_to_tensor,
                       imagenet_class_names, imagenet_classes)

_LOADERS: dict[str, Callable[[], torch.nn.Module]] = {
    "efficientnet-lite0": efficientnet_lite0,
    "digits-cnn": digits_cnn,
    "digits-clutter-cnn": digits_clutter_cnn,
    "commands-cnn": commands_cnn,
    "sentiment-cnn": sentiment_cnn,
    **ENCODERS,
}


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_LOADERS)


def load(name: str = "efficientnet-lite0") -> torch.nn.Module:
    """Load a model by name (see :func:`available`) or from a ``.pt`` file saved with ``torch.save(model)``.

    Named models take images in [0, 1] and carry ``class_names`` and ``input_size``.
    """
    key = name.strip().lower().replace("_", "-")
    if key in _LOADERS:
        return _LOADERS[key]()
    path = Path(name)
    if path.suffix in (".pt", ".pth") and path.exists():
        model = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(model, dict):
            raise ValueError(f"{name} holds a state dict, not a model: save the whole module with torch.save(model) "
                             "or a TorchScript module with torch.jit.save")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{name} does not hold an nn.Module (got {type(model).__name__})")
        return model.eval()
    if path.suffix in (".pt", ".pth"):
        raise FileNotFoundError(f"model file {name} does not exist")
    raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}, or a path to a .pt file")


__all__ = ["AudioClassifier", "CommandsCNN", "command_clips", "commands_cnn", "two_command_clips",
           "SentimentCNN", "TextClassifier", "sentiment_cnn", "sentiment_corpus",
           "ClutterCNN", "DigitsCNN", "ImageClassifier", "Normalize", "available", "cache_dir", "class_index",
           "digits_clutter_cnn", "digits_cnn", "efficientnet_lite0", "image_to_tensor", "imagenet_class_names",
           "imagenet_classes", "load", "train_clutter_cnn", "train_digits_cnn",
           "ENCODERS", "ImageEncoder", "SentenceEncoder", "clutter_simclr", "digits_cnn_features",
           "efficientnet_lite0_features", "minilm_sentence_encoder"]
