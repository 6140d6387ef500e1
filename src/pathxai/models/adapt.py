"""Adapt any model to what pathxai's methods expect: a callable that returns one logits tensor.

    model = px.models.adapt(hf_model, output="logits")                    # a ModelOutput's field
    model = px.models.adapt(net, output=0, input_size=(224, 224),         # a tuple's first element, plus the
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))   # preprocessing of the CLI
    model = px.models.adapt(encoder, output=lambda out: out["pooler_output"])

Without ``output`` the raw output is unwrapped by :func:`as_logits`: a tensor as it is, a ``ModelOutput``'s (or any
object's) ``logits``, a dict's ``"logits"``, a tuple's or list's first element; anything else is a ``TypeError`` that
names what came back and how to adapt it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core.placement import _describe, _hint, as_logits  # noqa: F401 - as_logits re-exported
from .imagenet import image_to_tensor

OutputSpec = Union[None, str, int, Callable[[Any], torch.Tensor]]


def select_output(out: Any, output: OutputSpec, model_name: str = "the model") -> torch.Tensor:
    """Pick the tensor ``output`` names from a raw model output (see :func:`adapt`)."""
    if output is None:
        return as_logits(out, model_name)
    if callable(output):
        got = output(out)
        what = f"output={getattr(output, '__name__', type(output).__name__)}"
    elif isinstance(output, str):
        what = f"output={output!r}"
        if isinstance(out, Mapping):
            if output not in out:
                raise TypeError(f"{model_name} returned {_describe(out)}: no key {output!r} ({what})")
            got = out[output]
        elif hasattr(out, output):
            got = getattr(out, output)
        else:
            raise TypeError(f"{model_name} returned {_describe(out)}: no field {output!r} ({what})")
    elif isinstance(output, int) and not isinstance(output, bool):
        what = f"output={output}"
        if isinstance(out, Mapping):   # a ModelOutput indexes its non-None fields in order
            items = list(out.values())
        elif isinstance(out, (tuple, list)):
            items = list(out)
        else:
            raise TypeError(f"{model_name} returned {_describe(out)}, which cannot be indexed ({what})")
        if not -len(items) <= output < len(items):
            raise TypeError(f"{model_name} returned {_describe(out)}: index {output} out of range ({what})")
        got = items[output]
    else:
        raise TypeError(f"output must be None, a field or key name (str), an index (int) or a callable "
                        f"raw_output -> tensor, got {type(output).__name__}")
    if not isinstance(got, torch.Tensor):
        raise TypeError(f"{what} gave {type(got).__name__} from {model_name}'s {_describe(out)}; it must give "
                        "the (N, K) logits tensor")
    return got


def _constants(value: float | Sequence[float] | None, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() == 0 or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a finite number or sequence of numbers (one per channel), got {value!r}")
    if name == "std" and (t <= 0).any():
        raise ValueError(f"std must be positive, got {value!r}")
    return t


class AdaptedModel(nn.Module):
    """A model wrapped so that it takes the inputs of pathxai's methods and returns one logits tensor.

    ``forward(x)``: ``x`` (N, ...) -- for images (N, C, H, W) in [0, 1] when ``mean``/``std`` are given (the
    normalisation ``(x - mean) / std`` is done here, per channel, on ``x``'s device) -- returns the (N, K) tensor
    that ``output`` selects from the wrapped model's raw output.

    Attributes (only those that are known are set, so that ``hasattr`` tells): ``model`` (the wrapped callable),
    ``model_name``, ``class_names``, ``input_size`` (H, W), ``input_shape`` (C, H, W), ``preprocess(image) ->
    (1, C, H, W)``.
    """

    def __init__(self, model: Callable[..., Any], *, output: OutputSpec = None,
                 preprocess: Callable[[np.ndarray], torch.Tensor] | None = None,
                 input_size: int | tuple[int, int] | None = None, class_names: Sequence[str] | None = None,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 channels: int | None = None, name: str | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function), got {type(model).__name__}")
        if isinstance(model, AdaptedModel):
            raise TypeError("model is already adapted: adapt the original model with all the options at once")
        if not (output is None or callable(output) or isinstance(output, str)
                or (isinstance(output, int) and not isinstance(output, bool))):
            raise TypeError(f"output must be None, a field or key name (str), an index (int) or a callable "
                            f"raw_output -> tensor, got {type(output).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a callable image (H, W, C) -> (1, C, H, W) tensor, "
                            f"got {type(preprocess).__name__}")
        self.model = model   # an nn.Module is registered as a submodule: .to(), .eval() and parameters follow it
        self.output = output
        self.model_name = name if name is not None else getattr(model, "model_name", type(model).__name__)
        mean_t, std_t = _constants(mean, "mean"), _constants(std, "std")
        if (mean_t is None) != (std_t is None):
            raise ValueError("mean and std go together: give both or neither")
        if mean_t is not None and std_t is not None and mean_t.numel() != std_t.numel() and \
                1 not in (mean_t.numel(), std_t.numel()):
            raise ValueError(f"mean has {mean_t.numel()} values and std {std_t.numel()}: give one per channel")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise TypeError("class_names must be a sequence of str, one per output class")
            self.class_names = list(class_names)
        if input_size is not None:
            size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
                raise ValueError(f"input_size must be a positive int or (H, W) of positive ints, got {input_size!r}")
            self.input_size = size
            if channels is None:
                n = max(mean_t.numel(), std_t.numel()) if mean_t is not None and std_t is not None else 1
                channels = n if n > 1 else 3
            self.input_shape = (int(channels), *size)
        elif channels is not None:
            raise ValueError("channels needs input_size (it only sets input_shape = (channels, H, W))")
        if preprocess is not None:
            self.preprocess = preprocess
        elif input_size is not None:
            self.preprocess = self._default_preprocess

    def _default_preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, C) uint8 / float image -> (1, C, H, W) in [0, 1]: largest centred square resized to
        ``input_size`` (:func:`pathxai.models.image_to_tensor`), colour converted to the model's channels."""
        x = image_to_tensor(image, self.input_size)
        channels = self.input_shape[0]
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1).contiguous()
        return x

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.mean is not None:
            c = x.shape[1] if x.ndim >= 2 else 1
            shape = (1, -1) + (1,) * (x.ndim - 2)
            mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
            if max(mean.numel(), std.numel()) not in (1, c):
                raise ValueError(f"x has {c} channels (shape {tuple(x.shape)}) but mean/std have "
                                 f"{max(mean.numel(), std.numel())} values")
            x = (x - mean.reshape(shape)) / std.reshape(shape)
        return select_output(self.model(x, *args, **kwargs), self.output, self.model_name)


def adapt(model: Callable[..., Any], *, output: OutputSpec = None,
          preprocess: Callable[[np.ndarray], torch.Tensor] | None = None,
          input_size: int | tuple[int, int] | None = None, class_names: Sequence[str] | None = None,
          mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
          channels: int | None = None, name: str | None = None) -> AdaptedModel:
    """Wrap ``model`` (any callable) so that it returns one logits tensor, optionally with image preprocessing.

    Args:
        model: an ``nn.Module`` or a function ``x -> raw output``.
        output: which tensor of the raw output to return: a field or key name (``"logits"``,
            ``"pooler_output"``), an index (``0``), or a callable ``raw_output -> tensor``. Default
            (:func:`as_logits`): a tensor as it is, a ``ModelOutput``'s ``logits``, a dict's ``"logits"``, a
            tuple's / list's first element; anything else raises ``TypeError`` naming what was returned.
        preprocess: ``image (H, W[, C]) uint8 or float -> (1, C, H, W)`` tensor in [0, 1]; used by the CLI on image
            files. Default when ``input_size`` is given: the largest centred square resized to ``input_size``.
        input_size: (H, W) (or one int) the model takes; sets ``input_size`` and ``input_shape``.
        class_names: one name per output class.
        mean, std: per-channel (or scalar) constants: the adapted model then takes images in [0, 1] and feeds
            ``(x - mean) / std`` to ``model``, as pathxai's bundled models do.
        channels: C of ``input_shape`` (default: the number of mean/std values when more than one, else 3).
        name: ``model_name`` (default: the model's own ``model_name`` or its class name).
    Returns:
        An :class:`AdaptedModel` (an ``nn.Module``): ``forward(x (N, ...)) -> (N, K)``.
    Raises:
        TypeError: a model that is not callable, or an ``output`` / ``preprocess`` / ``class_names`` of the wrong
            type; at call time, an output that ``output`` cannot turn into a tensor.
        ValueError: inconsistent ``mean``/``std``/``input_size``/``channels``.
    """
    return AdaptedModel(model, output=output, preprocess=preprocess, input_size=input_size, class_names=class_names,
                        mean=mean, std=std, channels=channels, name=name)


__all__ = ["AdaptedModel", "OutputSpec", "adapt", "as_logits", "select_output"]
