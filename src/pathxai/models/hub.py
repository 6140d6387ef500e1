"""Bring your own model: timm, torchvision and transformers models by name, weights from local files.

    px.models.load("timm:vit_tiny_patch16_224", weights="vit_tiny.pth")   # a state dict (.pth / .pt / .safetensors)
    px.models.load("torchvision:resnet18", weights="resnet18.pth")
    px.models.load("hf:path/to/folder")     # a save_pretrained folder: image or text sequence classifier

Each builds the real architecture with the real library (``pretrained=False`` / ``weights=None``) and loads the
local weights: **nothing is downloaded at run time**. The number of classes is read off the weights (the classifier
head's shape); class names come from a transformers config's ``id2label``, else the ImageNet names when there are
1000 classes, else ``"0"``, ``"1"``, ... The preprocessing (input size, resize, interpolation, centre crop, mean,
std) is the library's own evaluation transform for that model, read from its config -- timm's pretrained config
(``resolve_data_config``), the torchvision weights entry's ``transforms`` metadata (reading it downloads nothing),
the transformers image processor -- and :class:`ImagePreprocessing` reproduces it with PIL, so
``model.preprocess(image)`` gives what the library's transform gives (in [0, 1]; the normalisation is inside the
model).

Image models come back as :class:`HubImageClassifier` (a :class:`~pathxai.models.ImageClassifier`): (N, C, H, W)
in [0, 1] -> (N, K) logits. Text classifiers come back as :class:`HubTextClassifier`, explained token by token
through their input embeddings (see there).

To get weights once, on a machine with internet::

    m = timm.create_model("vit_tiny_patch16_224", pretrained=True); torch.save(m.state_dict(), "vit.pth")
    m = torchvision.models.get_model("resnet18", weights="DEFAULT"); torch.save(m.state_dict(), "resnet18.pth")
    AutoModelForImageClassification.from_pretrained(ID).save_pretrained("dir")
    AutoImageProcessor.from_pretrained(ID).save_pretrained("dir")      # (text: AutoTokenizer)
"""
from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .adapt import as_logits
from .imagenet import ImageClassifier, Normalize, imagenet_class_names

PREFIXES = ("timm", "torchvision", "hf")
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
VISION_INSTALL = ("pip install 'pathxai[vision]' -- timm needs a torchvision built for the installed torch "
                  "(e.g. torch==2.14.1 with torchvision==0.29.1; the CPU torch 2.13.0 wheel has no importable "
                  "torchvision)")

# PIL resampling filters by the names the libraries use (timm strings, torchvision InterpolationMode values)
_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def is_hub_name(name: Any) -> bool:
    """Whether ``name`` is ``timm:NAME``, ``torchvision:NAME`` or ``hf:DIR``."""
    return isinstance(name, str) and ":" in name and name.split(":", 1)[0].strip().lower() in PREFIXES


# ---------------------------------------------------------------------------------------------------------------
# preprocessing


@dataclass(frozen=True)
class ImagePreprocessing:
    """A library's evaluation transform of one image, reproduced with PIL (no torchvision needed).

    Steps: resize (``resize`` an int: the shorter side to it, the longer to ``int(resize * long / short)``, as
    torchvision's ``Resize(int)`` and transformers' ``shortest_edge`` do; a pair ``(h, w)``: both sides), then a
    centre crop to ``crop`` (h, w) (offset ``round((H - h) / 2)`` like torchvision, or ``(H - h) // 2`` like
    transformers: ``crop_rounding``), then /255. ``mean`` and ``std`` are what the network expects after that;
    the models here apply them inside ``forward``.

    Attributes:
        resize: int (shorter side), (h, w), or None (no resize).
        crop: (h, w) of the centre crop, or None.
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"``, ``"lanczos"``, ``"box"`` or ``"hamming"``.
        mean, std: per-channel constants (their length is the number of channels).
        crop_rounding: ``"round"`` (torchvision, timm) or ``"floor"`` (transformers).
        source: where these numbers were read, e.g. ``"timm pretrained_cfg"``.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_rounding: str = "round"
    source: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(f"interpolation must be one of {sorted(_PIL_FILTERS)}, got {self.interpolation!r}")
        if self.crop_rounding not in ("round", "floor"):
            raise ValueError(f"crop_rounding must be 'round' or 'floor', got {self.crop_rounding!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel, got {self.mean} and {self.std}")
        if self.crop is None and not isinstance(self.resize, tuple):
            raise ValueError("the output size must be fixed: give crop=(h, w) or resize=(h, w)")

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the network's input."""
        size = self.crop if self.crop is not None else self.resize
        return int(size[0]), int(size[1])  # type: ignore[index]

    @property
    def channels(self) -> int:
        return len(self.mean)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step for an image of ``height`` x ``width``."""
        if self.resize is None:
            return height, width
        if isinstance(self.resize, tuple):
            return int(self.resize[0]), int(self.resize[1])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = int(self.resize), int(int(self.resize) * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, C) image, uint8 in 0..255 or float in [0, 1] -> (1, C', h, w) float32 in [0, 1].

        uint8 images are resized as 8-bit images (exactly as the libraries do on a PIL image); float images per
        channel in 32-bit float. Grey is repeated to the model's channels, colour averaged for a grey model, an
        alpha channel dropped.
        """
        from PIL import Image

        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            arr = arr[..., :3] if arr.shape[2] == 4 else arr
            if arr.shape[2] == 1:
                arr = arr[..., 0]
        elif arr.ndim != 2:
            raise ValueError(f"image must have shape (H, W) or (H, W, C) with C in 1, 3, 4, got {arr.shape}")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"image is empty: shape {arr.shape}")
        if arr.dtype == np.uint8:
            planes = [Image.fromarray(np.ascontiguousarray(arr))]
        elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
            f = arr.astype(np.float32) * (255.0 if np.issubdtype(arr.dtype, np.floating) else 1.0)
            f = f[..., None] if f.ndim == 2 else f
            planes = [Image.fromarray(np.ascontiguousarray(f[..., c]), mode="F") for c in range(f.shape[2])]
        else:
            raise TypeError(f"image must be a uint8 or float array, got dtype {arr.dtype}")
        h0, w0 = arr.shape[:2]
        h, w = self.resized_size(h0, w0)
        resample = _PIL_FILTERS[self.interpolation]
        if (h, w) != (h0, w0):
            planes = [p.resize((w, h), resample=resample) for p in planes]
        if self.crop is not None:
            ch, cw = self.crop
            if self.crop_rounding == "round":
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            else:
                top, left = (h - ch) // 2, (w - cw) // 2
            planes = [p.crop((left, top, left + cw, top + ch)) for p in planes]   # outside the image: zeros
        arrays = [np.asarray(p, dtype=np.float32) for p in planes]
        # one 8-bit plane: (h, w) grey or (h, w, 3) colour; float planes: one (h, w) per channel
        out = arrays[0].transpose(2, 0, 1) if arrays[0].ndim == 3 else np.stack(arrays, axis=0)
        x = torch.from_numpy(np.ascontiguousarray(out / np.float32(255.0))).unsqueeze(0).clamp_(0, 1)
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x[:, :1].expand(-1, self.channels, -1, -1)
        return x.contiguous()


def timm_preprocessing(data_config: dict[str, Any]) -> ImagePreprocessing:
    """:class:`ImagePreprocessing` of timm's evaluation transform for a data config from
    ``timm.data.resolve_data_config({}, model=model)`` (keys input_size, interpolation, mean, std, crop_pct,
    crop_mode): resize to ``floor(size / crop_pct)`` (the shorter side; both sides for ``crop_mode="squash"``),
    centre crop to ``size``."""
    _, h, w = (int(v) for v in data_config["input_size"])
    crop_pct = float(data_config.get("crop_pct") or 0.875)
    mode = data_config.get("crop_mode") or "center"
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    interp = str(data_config.get("interpolation") or "bilinear")
    if interp not in _PIL_FILTERS:
        warnings.warn(f"timm interpolation {interp!r} is not reproduced; using bicubic", stacklevel=2)
        interp = "bicubic"
    if mode == "squash":
        resize: int | tuple[int, int] = scale
    else:
        if mode != "center" or scale[0] != scale[1]:
            warnings.warn(f"timm crop_mode {mode!r} with input size {(h, w)} is approximated by resizing the shorter "
                          "side and a centre crop; pass your own preprocessing through px.models.adapt for exactness",
                          stacklevel=2)
        resize = max(scale)
    return ImagePreprocessing(resize, (h, w), interp, tuple(float(v) for v in data_config["mean"]),
                              tuple(float(v) for v in data_config["std"]), "round", "timm data config")


def torchvision_preprocessing(transforms: Callable[..., Any]) -> ImagePreprocessing:
    """:class:`ImagePreprocessing` of a torchvision weights entry's ``transforms`` (a ``functools.partial`` of
    ``ImageClassification``): its keywords, and the class's defaults for the others (read, not called)."""
    if not isinstance(transforms, functools.partial) or getattr(transforms.func, "__name__", "") != \
            "ImageClassification":
        raise ValueError(f"the weights' transforms are {transforms!r}, not an image classification preset")
    params = {k: p.default for k, p in inspect.signature(transforms.func.__init__).parameters.items()
              if p.default is not inspect.Parameter.empty}
    params.update(transforms.keywords)
    interp = params["interpolation"]
    interp = str(getattr(interp, "value", interp)).lower()
    resize, crop = int(params["resize_size"]), int(params["crop_size"])
    return ImagePreprocessing(resize, (crop, crop), interp, tuple(float(v) for v in params["mean"]),
                              tuple(float(v) for v in params["std"]), "round", "torchvision weights transforms")


def _size_get(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def hf_preprocessing(processor: Any, image_size: int | None = None) -> ImagePreprocessing:
    """:class:`ImagePreprocessing` of a transformers image processor (its attributes: ``size``, ``resample``,
    ``do_center_crop``/``crop_size``, ``crop_pct`` for ConvNeXT, ``rescale_factor``, ``image_mean``/``image_std``).

    ``image_size`` (the model config's) fixes the output size when the processor only resizes the shorter side.
    """
    size = getattr(processor, "size", None)
    resample = getattr(processor, "resample", 2)
    resample = int(getattr(resample, "value", resample)) if resample is not None else 2
    names = {v: k for k, v in _PIL_FILTERS.items()}
    if resample not in names:
        raise ValueError(f"image processor resample {resample!r} is not a PIL filter")
    interp = names[resample]
    short, height, width = (_size_get(size, k) for k in ("shortest_edge", "height", "width"))
    longest = _size_get(size, "longest_edge")
    crop = None
    resize: int | tuple[int, int] | None
    if not getattr(processor, "do_resize", True):
        resize = None
    elif "convnext" in type(processor).__name__.lower() and short:
        crop_pct = float(getattr(processor, "crop_pct", None) or 224 / 256)
        if short < 384:
            resize, crop = int(short / crop_pct), (int(short), int(short))
        else:
            resize = (int(short), int(short))
    elif height and width:
        resize = (int(height), int(width))
    elif short and not longest:
        resize = int(short)
    else:
        raise ValueError(f"image processor size {size!r} is not supported (shortest_edge, or height and width); "
                         "pass your own preprocessing through px.models.adapt")
    if getattr(processor, "do_center_crop", False):
        cs = getattr(processor, "crop_size", None)
        crop = (int(_size_get(cs, "height")), int(_size_get(cs, "width")))
    if crop is None and not isinstance(resize, tuple):
        if image_size is None:
            raise ValueError("the image processor gives no fixed input size and the model config has no image_size")
        crop = (int(image_size), int(image_size))
    factor = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
    if not math.isclose(factor, 1 / 255, rel_tol=1e-6):
        raise ValueError(f"image processor rescale_factor {factor} is not 1/255: pass your own preprocessing through "
                         "px.models.adapt")
    if getattr(processor, "do_normalize", True):
        mean = tuple(float(v) for v in processor.image_mean)
        std = tuple(float(v) for v in processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return ImagePreprocessing(resize, crop, interp, mean, std, "floor", f"transformers {type(processor).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# weights


def _how_to_get(prefix: str, arch: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", arch)
    if prefix == "timm":
        make = f"m = timm.create_model({arch!r}, pretrained=True)"
    else:
        make = f"m = torchvision.models.get_model({arch!r}, weights='DEFAULT')"
    return (f"get the weights once on a machine with internet: `{make}; torch.save(m.state_dict(), '{stem}.pth')`, "
            f"then pass the file: px.models.load('{prefix}:{arch}', weights='{stem}.pth') (CLI: --weights "
            f"{stem}.pth); pathxai downloads nothing")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``: no code is run).

    A checkpoint that nests the weights under ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or
    ``"module"`` is unwrapped, and a ``"module."`` prefix on every key (``DataParallel``) is dropped.

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:   # pragma: no cover - safetensors comes with transformers and timm
            raise ImportError("reading .safetensors needs `pip install safetensors`") from err
        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on junk
            raise ValueError(f"{p} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types on junk and on pickled objects
            raise ValueError(f"{p} is not a state dict readable with torch.load(weights_only=True) "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); save the weights with "
                             "torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{p} does not hold a state dict (a dict of tensors), got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{p} holds a dict without tensors (keys {list(obj)[:8]}), not a state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _listing(keys: Sequence[str], limit: int = 8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def weights_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """A readable account of how a state dict does not fit a model's own state dict, or None when it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"missing from the file ({len(missing)}): {_listing(missing)}")
    if unexpected:
        parts.append(f"in the file but not in the model ({len(unexpected)}): {_listing(unexpected)}")
    if shapes:
        parts.append(f"shapes differ ({len(shapes)}): {_listing(shapes, 5)}")
    return "; ".join(parts)


def _head_classes(model: nn.Module, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> int | None:
    """K when the only difference is the classifier's class count: every differing tensor belongs to a Linear or
    Conv layer, is the same in all but its first dimension, and all say K classes (not the model's count)."""
    diff = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not diff:
        return None
    counts = {int(state[k].shape[0]) for k in diff if state[k].ndim >= 1}
    if len(counts) != 1 or any(state[k].ndim != own[k].ndim or state[k].shape[1:] != own[k].shape[1:] for k in diff):
        return None
    for k in diff:
        owner = k.rsplit(".", 1)[0] if "." in k else ""
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            return None
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv1d)):
            return None
    return counts.pop()


def fit_weights(build: Callable[[int | None], nn.Module], state: dict[str, torch.Tensor], label: str) -> nn.Module:
    """Build the model (``build(None)``: the library's default head), rebuild it with ``build(K)`` when only the
    classifier's class count differs from the weights', then load the weights strictly.

    Raises:
        ValueError: weights that do not fit, listing missing and unexpected keys and differing shapes.
    """
    model = build(None)
    own = model.state_dict()
    k = _head_classes(model, own, state)
    if k is not None:
        model = build(k)
        own = model.state_dict()
    problem = weights_mismatch(own, state)
    if problem is not None:
        raise ValueError(f"the weights do not fit {label}: {problem}. Are they for this architecture (and saved "
                         "with torch.save(model.state_dict(), path))?")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _class_names(n: int, id2label: dict[Any, str] | None = None) -> list[str]:
    if id2label and len(id2label) == n:
        labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)]   # type: ignore[arg-type]
        if labels != [f"LABEL_{i}" for i in range(n)]:
            return labels
    return imagenet_class_names() if n == 1000 else [str(i) for i in range(n)]


def _close(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, options, n=6, cutoff=0.6)
    if not close:
        close = [o for o in options if name.lower() in o.lower()][:6]
    return f"; close matches: {', '.join(close)}" if close else ""


# ---------------------------------------------------------------------------------------------------------------
# image models


class HubImageClassifier(ImageClassifier):
    """A timm / torchvision / transformers image classifier: (N, C, H, W) in [0, 1] -> (N, K) logits.

    Attributes (besides those of :class:`~pathxai.models.ImageClassifier`): ``preprocessing`` (the
    :class:`ImagePreprocessing` that ``preprocess`` applies), ``library``, ``weights_path``.
    Grad-CAM uses the last ``nn.Conv2d`` unless given ``layer=``.
    """

    def __init__(self, net: nn.Module, preprocessing: ImagePreprocessing, class_names: Sequence[str], name: str,
                 library: str, weights_path: str | None = None) -> None:
        super().__init__(net, Normalize(preprocessing.mean, preprocessing.std), class_names,
                         preprocessing.input_size, name, gradcam_layer=None, channels=preprocessing.channels)
        self.preprocessing = preprocessing
        self.library = library
        self.weights_path = weights_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_logits(self.net(self.normalize(x)), self.model_name)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W[, C]) uint8 or float image -> (1, C, H, W) in [0, 1]: the library's evaluation resize and
        centre crop (see :class:`ImagePreprocessing`)."""
        return self.preprocessing(image)


def _import_timm() -> Any:
    try:
        import timm
        import timm.data
    except Exception as err:  # noqa: BLE001 - a torchvision built for another torch fails with RuntimeError
        raise ImportError(f"timm: models need timm: {VISION_INSTALL}. Importing timm failed: "
                          f"{type(err).__name__}: {err}") from err
    return timm


def _import_torchvision() -> Any:
    try:
        import torchvision
        import torchvision.models
    except Exception as err:  # noqa: BLE001
        raise ImportError(f"torchvision: models need torchvision: {VISION_INSTALL}. Importing torchvision failed: "
                          f"{type(err).__name__}: {err}") from err
    return torchvision


def _need_weights(prefix: str, arch: str, weights: str | os.PathLike[str] | None) -> Path:
    if weights is None:
        raise ValueError(f"{prefix}:{arch} needs weights=PATH (a state dict file): {_how_to_get(prefix, arch)}")
    p = Path(weights)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} for {prefix}:{arch} does not exist: {_how_to_get(prefix, arch)}")
    return p


def load_timm(name: str, weights: str | os.PathLike[str] | None, **model_kwargs: Any) -> HubImageClassifier:
    """``timm.create_model(name, pretrained=False, **model_kwargs)`` with the weights of a local state dict file.

    ``name`` may carry a pretrained tag (``"vit_tiny_patch16_224.augreg_in21k"``), which selects that tag's
    preprocessing. The class count is read off the weights; the preprocessing from timm's data config.

    Raises:
        ImportError: timm (or a matching torchvision) missing. ValueError: unknown name (with close matches), no
        weights given, or weights that do not fit. FileNotFoundError: no such weights file.
    """
    timm = _import_timm()
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm model {name!r}{_close(arch, timm.list_models())}")
    path = _need_weights("timm", name, weights)
    state = read_state_dict(path)

    def build(k: int | None) -> nn.Module:
        kwargs = dict(model_kwargs)
        if k is not None:
            kwargs["num_classes"] = k
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as err:   # e.g. an unknown pretrained tag
            raise ValueError(f"timm cannot build {name!r}: {err}") from None

    net = fit_weights(build, state, f"timm:{name}")
    cfg = timm.data.resolve_data_config({}, model=net)
    prep = timm_preprocessing(cfg)
    k = int(getattr(net, "num_classes", 0) or 0) or _output_classes(net, prep)
    return HubImageClassifier(net, prep, _class_names(k), f"timm:{name}", "timm", str(path)).eval()


def _output_classes(net: nn.Module, prep: ImagePreprocessing) -> int:
    with torch.no_grad():
        p = next(net.parameters(), None)
        x = torch.zeros(1, prep.channels, *prep.input_size, device=p.device if p is not None else "cpu")
        return int(as_logits(net(x)).shape[-1])


def load_torchvision(name: str, weights: str | os.PathLike[str] | None, **model_kwargs: Any) -> HubImageClassifier:
    """``torchvision.models.get_model(arch, weights=None, **model_kwargs)`` with the weights of a local state dict.

    ``name`` is a classification model of ``torchvision.models.list_models(module=torchvision.models)``, optionally
    with the weights entry whose preprocessing to use: ``"resnet50.IMAGENET1K_V1"`` (default: ``DEFAULT``). The
    weights entry is only read for its ``transforms`` metadata (nothing is downloaded).

    Raises: as :func:`load_timm`.
    """
    tv = _import_torchvision()
    arch, _, entry = name.partition(".")
    names = tv.models.list_models(module=tv.models)
    if arch not in names:
        raise ValueError(f"unknown torchvision classification model {arch!r}{_close(arch, names)}")
    enum = tv.models.get_model_weights(arch)
    if entry:
        if entry not in enum.__members__:
            raise ValueError(f"torchvision {arch} has no weights entry {entry!r}; entries: "
                             f"{', '.join(enum.__members__)}")
        meta_entry = enum[entry]
    else:
        meta_entry = enum.DEFAULT
    path = _need_weights("torchvision", name, weights)
    state = read_state_dict(path)

    def build(k: int | None) -> nn.Module:
        kwargs = dict(model_kwargs)
        if k is not None:
            kwargs["num_classes"] = k
        return tv.models.get_model(arch, weights=None, **kwargs)

    net = fit_weights(build, state, f"torchvision:{arch}")
    prep = torchvision_preprocessing(meta_entry.transforms)
    k = _output_classes(net, prep)
    return HubImageClassifier(net, prep, _class_names(k), f"torchvision:{name}", "torchvision", str(path)).eval()


# ---------------------------------------------------------------------------------------------------------------
# transformers


def _hf_quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise ImportError("hf: models need transformers: pip install 'pathxai[text]'") from err
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _hf_kind(folder: Path) -> tuple[str, list[str]]:
    """``("image" | "text", architectures)`` from the folder's config.json."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: hf:DIR needs a folder written by save_pretrained; "
                                "once, on a machine with internet: AutoModelForImageClassification (or "
                                "AutoModelForSequenceClassification).from_pretrained(ID).save_pretrained(DIR) and "
                                "AutoImageProcessor (or AutoTokenizer).from_pretrained(ID).save_pretrained(DIR)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{cfg_path} is not readable JSON ({err})") from None
    archs = [str(a) for a in (config.get("architectures") or [])]
    if any("ForImageClassification" in a for a in archs):
        return "image", archs
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "text", archs
    raise ValueError(f"hf:{folder} holds {archs or 'no architectures'}: pathxai loads image classifiers "
                     "(...ForImageClassification) and text classifiers (...ForSequenceClassification) by name; wrap "
                     "other models with px.models.adapt(model, output=...)")


def _hf_load(auto: Any, folder: Path) -> nn.Module:
    try:
        net, info = auto.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                         ignore_mismatched_sizes=True)
    except OSError as err:
        raise FileNotFoundError(f"hf:{folder}: {err}") from None
    mismatched = [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in sorted(info.get("mismatched_keys", ()))]
    missing, unexpected = sorted(info.get("missing_keys", ())), sorted(info.get("unexpected_keys", ()))
    if missing or unexpected or mismatched:
        parts = [f"{what} ({len(keys)}): {_listing(keys)}" for what, keys in
                 (("missing from the weights", missing), ("in the weights but not in the model", unexpected),
                  ("shapes differ", mismatched)) if keys]
        raise ValueError(f"the weights in {folder} do not fit {type(net).__name__}: {'; '.join(parts)}")
    return net.eval()


class _HFImageNet(nn.Module):
    """pixel_values (N, C, H, W), normalised -> logits (N, K) of a transformers image classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def load_hf(folder: str | os.PathLike[str]) -> nn.Module:
    """A transformers classifier from a local ``save_pretrained`` folder (``local_files_only=True``).

    Image classifiers (``...ForImageClassification`` in the config's ``architectures``) come back as
    :class:`HubImageClassifier` with the folder's image processor's preprocessing; text classifiers
    (``...ForSequenceClassification``) as :class:`HubTextClassifier` with the folder's tokenizer.
    """
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"hf:{folder} is not a folder: give a folder written by save_pretrained (model and "
                                "image processor or tokenizer); pathxai downloads nothing")
    kind, _ = _hf_kind(p)
    _hf_quiet()
    import transformers as tf

    if kind == "image":
        net = _hf_load(tf.AutoModelForImageClassification, p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                processor = tf.AutoImageProcessor.from_pretrained(str(p), local_files_only=True)
            except (OSError, ValueError) as err:
                raise FileNotFoundError(f"hf:{folder} has no usable image processor config ({err}); save one with "
                                        "AutoImageProcessor.from_pretrained(ID).save_pretrained(DIR)") from None
        image_size = getattr(net.config, "image_size", None)
        prep = hf_preprocessing(processor, image_size if isinstance(image_size, int) else None)
        k = int(net.config.num_labels)
        names = _class_names(k, dict(net.config.id2label))
        return HubImageClassifier(_HFImageNet(net), prep, names, f"hf:{p}", "transformers", str(p)).eval()
    net = _hf_load(tf.AutoModelForSequenceClassification, p)
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"hf:{folder} has no usable tokenizer ({err}); save one with "
                                "AutoTokenizer.from_pretrained(ID).save_pretrained(DIR)") from None
    return HubTextClassifier(net, tokenizer, _class_names(int(net.config.num_labels), dict(net.config.id2label)),
                             f"hf:{p}").eval()


class HubTextClassifier(nn.Module):
    """A transformers sequence classifier explained token by token through its input embeddings.

    ``forward(x)``: ``x`` (N, L, D) word embeddings -> (N, K) logits, computed as
    ``model(inputs_embeds=x, attention_mask=...)`` (the model adds its position and token-type embeddings).

    **Padding convention**: a position whose embedding is all zeros is padding (attention mask 0); every other
    position is attended. :meth:`embed` writes zeros at the padding of texts shorter than the batch's longest, so
    ``self(self.embed(texts)[0])`` equals the model on the tokenised texts. Perturbations that keep zeros at zero
    (gradients, Integrated Gradients from the zero baseline, occlusion with zeros) leave the padding alone; noise or
    a non-zero baseline would turn padding into attended tokens, so explain one text at a time (no padding) with
    those. An input whose every position is zero attends to all of them (an empty text has no meaning).

    Per-token scores: ``explanation.attribution.sum(-1)`` -> (N, L), aligned with ``tokens`` from :meth:`embed`
    (special tokens such as [CLS] and [SEP] included; padding positions beyond ``len(tokens[i])``).

    Attributes: ``model`` (the transformers model), ``tokenizer``, ``class_names``, ``model_name``, ``max_length``,
    ``embedding_dim`` (D); ``input_shape`` is None (the length varies). ``unk_embedding`` and ``mask_embedding``
    (D,) are replacement tokens for perturbation baselines.
    """

    input_shape = None

    def __init__(self, model: nn.Module, tokenizer: Any, class_names: Sequence[str], name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.class_names = list(class_names)
        self.model_name = name
        table = model.get_input_embeddings()
        self.embedding_dim = int(table.weight.shape[1])
        limits = [v for v in (getattr(model.config, "max_position_embeddings", None),
                              getattr(tokenizer, "model_max_length", None)) if isinstance(v, int) and v > 0]
        self.max_length = min(limits) if limits else 512

    def _token_embedding(self, token_id: int | None) -> torch.Tensor | None:
        if token_id is None:
            return None
        return self.model.get_input_embeddings().weight[int(token_id)].detach().clone()

    @property
    def unk_embedding(self) -> torch.Tensor | None:
        """(D,) embedding of the unknown token (None when the tokenizer has none)."""
        return self._token_embedding(getattr(self.tokenizer, "unk_token_id", None))

    @property
    def mask_embedding(self) -> torch.Tensor | None:
        """(D,) embedding of the mask token (None when the tokenizer has none)."""
        return self._token_embedding(getattr(self.tokenizer, "mask_token_id", None))

    def embed(self, texts: str | Sequence[str], max_length: int | None = None
              ) -> tuple[torch.Tensor, list[list[str]]]:
        """Tokenise ``texts`` and look up their word embeddings.

        Returns:
            ``(x, tokens)``: ``x`` (N, L, D) float on the model's device, L the longest tokenised text (at most
            ``max_length``, default :attr:`max_length`; longer texts are truncated), zeros at padding; ``tokens``
            the N lists of token strings (special tokens included), ``len(tokens[i])`` real positions of text i.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a str or a non-empty sequence of str")
        limit = self.max_length if max_length is None else int(max_length)
        if limit < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length!r}")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        table = self.model.get_input_embeddings()
        ids = enc["input_ids"].to(table.weight.device)
        mask = enc["attention_mask"].to(table.weight.device).bool()
        with torch.no_grad():
            x = table(ids) * mask.unsqueeze(-1).to(table.weight.dtype)
        tokens = [self.tokenizer.convert_ids_to_tokens(ids[i][mask[i]].tolist()) for i in range(len(texts))]
        return x.detach(), tokens

    @staticmethod
    def attention_mask(x: torch.Tensor) -> torch.Tensor:
        """(N, L) long mask of the padding convention: 1 where a position's embedding is not all zeros; a row of
        zeros only is attended everywhere."""
        present = (x != 0).any(-1)
        empty = ~present.any(-1, keepdim=True)
        return (present | empty).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.embedding_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be word embeddings of shape (N, L, {self.embedding_dim}) (see embed()), "
                             f"got {shape}")
        return as_logits(self.model(inputs_embeds=x, attention_mask=self.attention_mask(x)), self.model_name)


# ---------------------------------------------------------------------------------------------------------------
# entry point


def load_hub(name: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Load ``timm:NAME`` / ``torchvision:NAME`` (with ``weights``, a state dict file) or ``hf:DIR``."""
    prefix, _, rest = name.partition(":")
    prefix, rest = prefix.strip().lower(), rest.strip()
    if not rest:
        raise ValueError(f"{name!r} names no model: write {prefix}:NAME" + ("" if prefix != "hf" else " (DIR)"))
    if prefix == "timm":
        return load_timm(rest, weights)
    if prefix == "torchvision":
        return load_torchvision(rest, weights)
    if prefix == "hf":
        if weights is not None:
            raise ValueError("hf:DIR loads the weights saved in the folder; weights= is for timm: and torchvision:")
        return load_hf(rest)
    raise ValueError(f"unknown model prefix {prefix!r}; use one of {', '.join(p + ':' for p in PREFIXES)}")


__all__ = ["HubImageClassifier", "HubTextClassifier", "ImagePreprocessing", "PREFIXES", "fit_weights",
           "hf_preprocessing", "is_hub_name", "load_hf", "load_hub", "load_timm", "load_torchvision",
           "read_state_dict", "timm_preprocessing", "torchvision_preprocessing", "weights_mismatch"]
