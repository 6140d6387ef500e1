"""A virtual second device for machines without a GPU: find every tensor pathxai creates on the CPU that would meet
a tensor on the model's device.

On a GPU, a tensor created with ``torch.zeros(shape)`` lives on the CPU and an operation that mixes it with the
model's (CUDA) tensors fails -- but on a CPU-only test machine both are CPU tensors and nothing fails. This
``TorchFunctionMode`` tags tensors as *device* tensors (the model's parameters and buffers, anything moved or created
with an explicit ``device=``, and everything computed from them) or *host* tensors (created without a device, or
moved to the CPU explicitly, e.g. the user's input), propagates the tags through every torch call, and records a
violation when a call made from pathxai's own code mixes them the way CUDA refuses:

- an operation whose tensor arguments include both a device tensor and a host tensor that is not 0-dim (CUDA
  accepts 0-dim CPU scalars, and CPU index tensors for indexing a CUDA tensor);
- indexing a host tensor with device indices, or assigning into a host tensor with device values (or the reverse)
  through advanced indexing;
- ``.numpy()`` on a device tensor (CUDA tensors must go through ``.cpu()`` first).

Calls made from third-party code (inside a model, Captum) are not judged, only tagged.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

PATHXAI_SRC = str(Path(__file__).resolve().parents[1] / "src" / "pathxai")
_TAG = "_pathxai_on_device"

_FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint,
              torch.randperm, torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor,
              torch.as_tensor, torch.scalar_tensor}
# moves that may cross devices (the tag of the result follows the destination)
_MOVES = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.type_as, torch.Tensor.copy_}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put,
             torch.index_select, torch.Tensor.index_select, torch.gather, torch.Tensor.gather}


def on_device(t: torch.Tensor) -> bool:
    return bool(getattr(t, _TAG, False))


def _tag(obj: Any, value: bool) -> None:
    if isinstance(obj, torch.Tensor):
        try:
            setattr(obj, _TAG, value)
        except (AttributeError, RuntimeError):
            pass
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tag(o, value)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tag(o, value)


def _tensors(obj: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


def _destination_is_device(args: tuple, kwargs: dict) -> bool | None:
    """For ``Tensor.to(...)``: whether the result is a device tensor -- the tag of a tensor argument, False for the
    literal string "cpu", True for any other device (e.g. ``x.device``); None when only the dtype changes."""
    for a in list(args[1:]) + [kwargs.get("device"), kwargs.get("other")]:
        if isinstance(a, torch.Tensor):
            return on_device(a)
        if isinstance(a, (str, torch.device)):
            return a != "cpu"
    return None


@dataclass
class Violation:
    what: str
    where: str


@dataclass
class VirtualDevice(TorchFunctionMode):
    """Run code under it with ``model`` "on the device"; ``violations`` lists what would fail on a GPU."""

    violations: list[Violation] = field(default_factory=list)

    def __init__(self, model: torch.nn.Module | None = None, judge: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.violations = []
        self.judge = tuple(judge)   # more source files whose calls are judged (the checker's own test)
        if model is not None:
            for t in list(model.parameters()) + list(model.buffers()):
                _tag(t, True)

    # -- judging ---------------------------------------------------------------------------------------------------
    def _caller(self) -> str | None:
        """The innermost pathxai frame outside this file if the call was made from pathxai's code, else None."""
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(PATHXAI_SRC):
                return f"{filename[len(PATHXAI_SRC) + 1:]}:{frame.f_lineno} in {frame.f_code.co_name}"
            if filename in self.judge:
                return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            if "site-packages" in filename and "torch" not in filename.split("site-packages")[-1][:8]:
                return None   # a third-party library (a model, Captum) made this call
            if "/torch/" not in filename and not filename.endswith("device_check.py"):
                return None   # test code
            frame = frame.f_back
        return None

    def _record(self, what: str) -> None:
        where = self._caller()
        if where is not None:
            self.violations.append(Violation(what, where))

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
        if func is torch.Tensor.numpy and args and on_device(args[0]):
            self._record("numpy() of a device tensor (call .cpu() first)")
        result = func(*args, **kwargs)
        if func in _FACTORIES:
            device = kwargs.get("device")
            # on this CPU-only machine ``device=x.device`` is "cpu" too: an explicit device that is not the literal
            # string "cpu" means "where the work is"
            _tag(result, device is not None and device != "cpu")
            if func in (torch.tensor, torch.as_tensor) and device is None and args and \
                    isinstance(args[0], torch.Tensor):
                _tag(result, on_device(args[0]))
            return result
        if func in _MOVES:
            if func is torch.Tensor.copy_:
                return result   # copies cross devices; the destination keeps its tag
            if func is torch.Tensor.cpu:
                dest = False
            elif func is torch.Tensor.cuda:
                dest = True
            elif func is torch.Tensor.type_as:
                dest = on_device(args[1])
            else:
                dest = _destination_is_device(args, kwargs)
                dest = on_device(args[0]) if dest is None else dest
            if result is args[0] and dest != on_device(args[0]) and result.layout == torch.strided:
                # on a CPU-only machine a move to "another" device returns the tensor itself; on a GPU it would be
                # a new tensor there: give the move its own alias so that the original keeps its tag
                result = result.view_as(result)
            _tag(result, dest)
            return result
        tensors = _tensors(list(args) + list(kwargs.values()), [])
        if func in _INDEXING:
            self._check_indexing(func, args, name)
        elif tensors and func is not torch.autograd.grad:   # autograd crosses devices along the graph
            dev = [t for t in tensors if on_device(t)]
            host = [t for t in tensors if not on_device(t) and t.ndim > 0]
            if dev and host and not name.startswith(("Tensor.__repr__", "Tensor.__format__", "Tensor.tolist",
                                                      "Tensor.item", "Tensor.__bool__", "Tensor.__int__",
                                                      "Tensor.__float__", "Tensor.__index__", "Tensor.__len__",
                                                      "Tensor.dim", "Tensor.size", "Tensor.numel")):
                self._record(f"{name} mixes device tensor(s) {[tuple(t.shape) for t in dev][:3]} with host "
                             f"tensor(s) {[tuple(t.shape) for t in host][:3]}")
        if tensors and (any(on_device(t) for t in tensors)):
            if func is not torch.Tensor.__setitem__:
                _tag(result, True)
        return result

    def _check_indexing(self, func: Any, args: tuple, name: str) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        base = args[0]
        index = args[1] if len(args) > 1 else None
        idx_tensors = [t for t in _tensors(index, []) if t.ndim > 0] if index is not None else []
        if not on_device(base) and any(on_device(t) for t in idx_tensors):
            self._record(f"{name}: a host tensor {tuple(base.shape)} indexed with device indices")
        if func in (torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put) and len(args) > 2:
            values = args[2]
            if isinstance(values, torch.Tensor) and values.ndim > 0 and on_device(values) != on_device(base):
                advanced = bool(idx_tensors) or func is not torch.Tensor.__setitem__
                if advanced or on_device(values):
                    self._record(f"{name}: {'device' if on_device(values) else 'host'} values "
                                 f"{tuple(values.shape)} written into a {'device' if on_device(base) else 'host'} "
                                 f"tensor {tuple(base.shape)}")


def format_violations(violations: list[Violation], limit: int = 12) -> str:
    seen: dict[tuple[str, str], int] = {}
    for v in violations:
        seen[(v.where, v.what)] = seen.get((v.where, v.what), 0) + 1
    lines = [f"{where}: {what} (x{n})" for (where, what), n in list(seen.items())[:limit]]
    return "\n".join(lines)


__all__ = ["VirtualDevice", "Violation", "format_violations", "on_device", "traceback"]
