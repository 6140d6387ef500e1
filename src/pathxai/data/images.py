"""Reading image files that pathxai did not make: size limits before decoding, conversions that say what they did.

Every reader of user images (``pathxai explain``, ``pathxai run``, folders of images) goes through
:func:`read_image`, which

- refuses an image whose header declares more than :func:`max_image_pixels` pixels (default 64 MP, environment
  variable ``PATHXAI_MAX_IMAGE_PIXELS``) *before* decoding it, so a 140 KB PNG that decodes to 12000 x 12000 costs
  nothing (Pillow's own guard only starts at 179 MP);
- reduces a large-but-allowed image with a cheap integer box filter (JPEG: DCT scaling while decoding) down to no
  less than twice the size the model needs, before the accurate anti-aliased resize of the model's preprocessing;
- converts what does not fit the model and records a note for every conversion that changes the data: 16-bit and
  32-bit images are *rescaled* to 8 bit (not clipped), transparency is composited on white, CMYK, palette and
  bi-level images are expanded, colour is turned into grey for a grey model (and grey repeated for a colour model),
  EXIF orientation is applied, and only the first frame of an animated image is used;
- reports a truncated, unreadable or unsupported file with an :class:`ImageReadError` that names the file.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "PATHXAI_MAX_IMAGE_PIXELS"
# the suffixes a folder scan treats as images (anything else in a folder is reported as skipped)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
# files a data folder may hold beside its images without being reported
SIDE_FILES = ("labels.csv", "labels.json")


class ImageReadError(ValueError):
    """An image file that cannot be used as it is; the message names the file and the reason."""


@dataclass
class ImageData:
    """A decoded image and what was done to it.

    Attributes:
        array: (H, W, 3) uint8 for colour, (H, W) uint8 for grey.
        notes: one sentence per change to the data (conversion, rescale, reduction, frame choice, rotation).
        source_size: (width, height) declared by the file. source_mode: the file's PIL mode (e.g. ``"I;16"``).
        scale: ``array``'s size over the full-resolution upright image's (1.0 unless reduced); multiply
            coordinates given on the full image (e.g. object boxes) by it.
    """

    array: np.ndarray
    notes: list[str] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)
    source_mode: str = ""
    scale: float = 1.0


def max_image_pixels(value: int | None = None) -> int:
    """The pixel limit in force: ``value`` if given, else ``PATHXAI_MAX_IMAGE_PIXELS``, else 64 000 000."""
    if value is None:
        env = os.environ.get(MAX_PIXELS_ENV)
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer (pixels), got {env!r}") from None
        name = MAX_PIXELS_ENV
    else:
        name = "max_pixels"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}")
    return value


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} MP"


def _rescale_to_uint8(arr: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """High-bit-depth grey (PIL modes I;16*, I, F) -> uint8 by a linear rescale of the nominal range."""
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        top, what = 65535.0, "16-bit"
    elif mode == "F":
        top = 1.0 if a.size and float(a.max()) <= 1.0 and float(a.min()) >= 0.0 else float(a.max() or 1.0)
        what = "32-bit float"
    else:  # "I": 32-bit integer; PNG and TIFF 16-bit data often arrive in this mode
        top = 65535.0 if a.size and float(a.max()) <= 65535 else float(a.max())
        what = "16-bit" if top == 65535.0 else "32-bit integer"
    lo = min(0.0, float(a.min())) if a.size else 0.0
    scaled = np.clip((a - lo) / max(top - lo, 1e-12), 0.0, 1.0)
    note = f"{what} grey image (PIL mode {mode}) rescaled linearly to 8 bit ([{lo:g}, {top:g}] -> [0, 255])"
    return np.round(scaled * 255.0).astype(np.uint8), note


def _composite_on_white(img: "Image.Image") -> "Image.Image":  # noqa: F821 - PIL is imported lazily
    from PIL import Image

    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def read_image(path: str | os.PathLike[str], *, channels: int = 3, convert: bool = True,
               max_pixels: int | None = None, reduce_to: tuple[int, int] | None = None) -> ImageData:
    """Decode one image file for a model with ``channels`` input channels (1 = grey, 3 = RGB).

    Args:
        path: the image file.
        channels: 1 or 3.
        convert: convert a file whose mode does not match (grey/palette/RGBA/CMYK/16-bit for an RGB model, colour
            for a grey model) and note it; with ``False`` such a file raises :class:`ImageReadError` naming its mode.
        max_pixels: refuse images whose header declares more pixels (default :func:`max_image_pixels`).
        reduce_to: (H, W) the model will resize to; a much larger image is first reduced by an integer factor to no
            less than twice that size (noted), which makes decoding and resizing cheap and changes the model's
            input only by the difference between two anti-aliasing filters.
    Returns:
        :class:`ImageData` with ``array`` (H, W, 3) or (H, W) uint8 and the ``notes``.
    Raises:
        FileNotFoundError: no such file. ImageReadError: too large, unreadable, truncated or (``convert=False``) of
        a mode that does not fit.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB) for image files, got {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    limit = max_image_pixels(max_pixels)
    expected = "L" if channels == 1 else "RGB"
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # our own limit below is lower than Pillow's warning threshold; keep Pillow quiet about the same thing
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size   # from the header: nothing is decoded yet
                source_mode = img.mode
                if width * height > limit:
                    raise ImageReadError(
                        f"{path.name}: {width} x {height} = {_megapixels(width * height)} is above the limit of "
                        f"{_megapixels(limit)}; refused before decoding (raise it with {MAX_PIXELS_ENV} or "
                        f"max_pixels= if you trust the file)")
                n_frames = int(getattr(img, "n_frames", 1) or 1)
                if n_frames > 1:
                    notes.append(f"{n_frames}-frame image: only the first frame is used")
                if not convert and source_mode != expected:
                    raise ImageReadError(
                        f"{path.name}: image mode {source_mode} does not match the model's {channels}-channel "
                        f"input (mode {expected}); convert it first or allow conversion (--convert-modes)")
                factor = 1
                if reduce_to is not None:
                    factor = max(1, min(width // (2 * reduce_to[1]), height // (2 * reduce_to[0])))
                if factor > 1 and img.format == "JPEG":
                    img.draft(img.mode, (width // factor, height // factor))   # DCT scaling while decoding
                img.load()   # a truncated file raises here
                frame = img
                if factor > 1:
                    exact = max(1, min(frame.size[0] // (width // factor), frame.size[1] // (height // factor)))
                    if frame.mode in ("P", "1"):
                        frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
                    elif frame.mode.startswith("I;16"):   # Image.reduce has no 16-bit modes; "I" holds them exactly
                        frame = frame.convert("I")
                    if exact > 1:
                        frame = frame.reduce(exact)
                    notes.append(f"reduced {factor}x from {width} x {height} to {frame.size[0]} x {frame.size[1]} "
                                 "(box filter) before the model's resize")
                orientation = img.getexif().get(0x0112, 1)   # the EXIF orientation tag
                if orientation not in (None, 1):
                    frame = ImageOps.exif_transpose(frame)
                    notes.append(f"turned upright as its EXIF orientation ({orientation}) says")
                array, conversion = _convert(frame, expected, source_mode)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path.name}: cannot read image ({type(err).__name__}: {err})") from None
    if conversion:
        notes.append(conversion)
    upright_width = height if orientation in (5, 6, 7, 8) else width   # these EXIF orientations swap the axes
    return ImageData(array, notes, (width, height), source_mode, array.shape[1] / upright_width)


def _convert(img: "Image.Image", expected: str, source_mode: str) -> tuple[np.ndarray, str | None]:  # noqa: F821
    """PIL image -> uint8 array in mode ``expected`` ("L" or "RGB"), and a note when the data changed.

    ``source_mode`` is the file's mode (``img`` may hold 16-bit data in mode "I" after a reduction)."""
    mode = img.mode
    if mode == expected:
        return np.asarray(img).copy(), None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey, note = _rescale_to_uint8(np.asarray(img), source_mode if source_mode.startswith("I;16") else mode)
        if expected == "RGB":
            return np.repeat(grey[..., None], 3, axis=2), note + ", repeated over 3 channels"
        return grey, note
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        if alpha.min() == 255:
            rgb = img.convert("RGB")
            note = f"opaque alpha channel dropped (PIL mode {mode})"
        else:
            rgb = _composite_on_white(img)
            note = (f"{int((alpha < 255).sum())} transparent or translucent pixels composited on white "
                    f"(PIL mode {mode})")
        if expected == "L":
            return np.asarray(rgb.convert("L")).copy(), note + ", then converted to grey"
        return np.asarray(rgb).copy(), note
    if expected == "L":
        if mode == "1":
            return np.asarray(img.convert("L")).copy(), "bi-level image expanded to 8-bit grey"
        return np.asarray(img.convert("L")).copy(), (
            f"colour image (PIL mode {mode}) converted to grey (ITU-R 601 luma): the model takes grey images")
    described = {"L": "grey image repeated over 3 channels", "1": "bi-level image expanded to RGB",
                 "P": "palette image expanded to RGB", "CMYK": "CMYK image converted to RGB (no colour profile)"}
    note = described.get(mode, f"PIL mode {mode} converted to RGB")
    return np.asarray(img.convert("RGB")).copy(), note


@dataclass
class FolderScan:
    """Image files found in the given paths, and the entries that were skipped with the reason for each."""

    files: list[Path]
    skipped: list[tuple[Path, str]]


def scan_images(paths: "list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]") -> FolderScan:
    """Expand files and folders (not recursive) into image files, sorted per folder.

    A folder entry is skipped, with a reason, when it is not an image file type, is a sub-folder, or is a symbolic
    link whose target lies outside the folder (a data folder must not lead a run elsewhere on the machine).
    ``labels.csv``/``labels.json`` and hidden files are passed over silently. A path named explicitly must exist
    and have an image suffix.

    Raises:
        FileNotFoundError: a named path does not exist. ImageReadError: a named file is not an image file type.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            root = p.resolve()
            for q in sorted(p.iterdir()):
                if q.name.startswith(".") or q.name in SIDE_FILES:
                    continue
                if q.is_symlink():
                    target = q.resolve()
                    if root not in target.parents:
                        skipped.append((q, "a symbolic link that points outside the folder"))
                        continue
                if q.is_dir():
                    skipped.append((q, "a folder (folders are not searched recursively)"))
                elif q.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append((q, f"not an image file type (expected one of {', '.join(IMAGE_SUFFIXES)})"))
                else:
                    files.append(q)
        elif p.exists():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageReadError(f"{p} is not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return FolderScan(files, skipped)
