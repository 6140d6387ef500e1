"""Untrusted files: model files that would run code, decompression bombs, images whose conversion loses data,
folders that lead elsewhere, label files that name paths. Each test failed on the code before the hardening."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pathxai as px
from pathxai.data import ImageReadError, read_image, scan_images
from pathxai.runs.work import plan_items


class _WritesAFile:
    """Unpickling this object writes a file: what a crafted model file does."""

    marker = ""

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _malicious_model_file(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned.txt"
    payload = _WritesAFile()
    payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": payload}, path)
    return path, marker


def test_a_malicious_model_file_writes_nothing(tmp_path):
    path, marker = _malicious_model_file(tmp_path)
    with pytest.raises(ValueError, match=r"pickled Python object.*refused.*trust=True"):
        px.models.load(str(path))
    assert not marker.exists()


def test_a_malicious_model_file_writes_nothing_through_a_run(tmp_path):
    from pathxai.runs.work import Worker

    path, marker = _malicious_model_file(tmp_path)
    config = {"model": str(path), "methods": ["saliency"], "method_params": {}, "batch_size": 4, "seed": 0,
              "threads_per_worker": 1}
    with pytest.raises(ValueError, match="--trust-model-file"):
        Worker(config)
    assert not marker.exists()


def test_trusted_and_safe_model_files_load(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    x = torch.rand(2, 3, 2, 2)
    torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")      # TorchScript: no Python code runs
    assert torch.allclose(px.models.load(str(tmp_path / "scripted.pt"))(x), model(x))
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "exported.pt2")                  # a graph and weights: no pickle
    assert torch.allclose(px.models.load(str(tmp_path / "exported.pt2"))(torch.cat([x, x])), model(torch.cat([x, x])))
    torch.save(model, tmp_path / "whole.pt")
    assert torch.allclose(px.models.load(str(tmp_path / "whole.pt"), trust=True)(x), model(x))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(ValueError, match="not a readable PyTorch file"):
        px.models.load(str(tmp_path / "junk.pt"))


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb)          # ~140 KB on disk, 144 MP decoded
    assert bomb.stat().st_size < 1_000_000
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"12000 x 12000 = 144.0 MP is above the limit of 64.0 MP"):
        read_image(bomb)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(ImageReadError, match="above the limit"):
        px.data.load_image(bomb)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageReadError, match="above the limit"):
        read_image(path, max_pixels=9_999)
    monkeypatch.setenv("PATHXAI_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(ImageReadError, match="PATHXAI_MAX_IMAGE_PIXELS"):
        read_image(path)
    monkeypatch.setenv("PATHXAI_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="PATHXAI_MAX_IMAGE_PIXELS must be a positive integer"):
        read_image(path)


def test_large_images_are_reduced_before_the_models_resize(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (30, 30, 3)), np.ones((100, 100, 1))).astype(np.uint8)   # 3000 x 3000
    path = tmp_path / "large.png"
    Image.fromarray(smooth).save(path)
    data = read_image(path, reduce_to=(224, 224))
    assert data.array.shape == (500, 500, 3) and data.scale == pytest.approx(1 / 6)
    assert any("reduced 6x" in n for n in data.notes)
    model_input = px.models.image_to_tensor(data.array, (224, 224))
    full = px.models.image_to_tensor(smooth, (224, 224))
    assert (model_input - full).abs().mean() < 0.01        # the model sees almost the same picture


def test_16_bit_images_are_rescaled_not_clipped_and_noted(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)   # 0 .. 65520
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    data = read_image(path, channels=1)
    assert data.source_mode.startswith("I;16")
    assert data.array.dtype == np.uint8
    assert (data.array == 255).mean() < 0.01             # the old 8-bit clip turned 98% of this ramp white
    np.testing.assert_allclose(data.array.astype(float), ramp / 65535 * 255, atol=0.51)
    assert any("16-bit" in n and "rescaled" in n for n in data.notes)
    with pytest.raises(ImageReadError, match="mode I;16 does not match"):
        read_image(path, channels=1, convert=False)


@pytest.mark.parametrize("mode,expected", [
    ("RGBA", "composited on white"), ("LA", "composited on white"), ("CMYK", "CMYK image converted to RGB"),
    ("P", "palette image expanded"), ("L", "grey image repeated over 3 channels"), ("1", "bi-level image"),
])
def test_every_conversion_for_an_rgb_model_is_noted(tmp_path, mode, expected):
    img = Image.new(mode, (8, 8))
    if mode in ("RGBA", "LA"):
        img.putpixel((0, 0), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
        img.putpixel((1, 1), (255, 0, 0, 255) if mode == "RGBA" else (255, 255))
    path = tmp_path / f"img.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    data = read_image(path)
    assert data.array.shape == (8, 8, 3)
    assert any(expected in n for n in data.notes), data.notes
    if mode == "RGBA":
        assert tuple(data.array[7, 7]) == (255, 255, 255)   # transparent pixels show the white background
        assert tuple(data.array[1, 1]) == (255, 0, 0)


def test_a_colour_image_for_a_grey_model_is_noted(tmp_path):
    path = tmp_path / "colour.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    data = read_image(path, channels=1)
    assert data.array.shape == (8, 8)
    assert any("converted to grey" in n and "the model takes grey images" in n for n in data.notes)


def test_animated_images_are_read_with_a_note_and_gif_is_an_image_type(tmp_path):
    frames = [Image.new("RGB", (10, 10), (40 * i, 0, 0)) for i in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    data = read_image(path)
    assert any("3-frame image: only the first frame is used" in n for n in data.notes)
    assert scan_images([tmp_path]).files == [path]


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg: cannot read image"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match=r"text\.png: cannot read image"):
        read_image(tmp_path / "text.png")


def test_exif_orientation_is_applied_and_noted(tmp_path):
    img = Image.new("RGB", (30, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6                                        # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    data = read_image(tmp_path / "phone.jpg")
    assert data.array.shape == (30, 20, 3)
    assert any("EXIF orientation (6)" in n for n in data.notes)


def test_folder_scans_report_what_they_do_not_read(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "notes.txt").write_text("x")
    (folder / "labels.csv").write_text("file,label\n")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (folder / "link.png").symlink_to(outside)
    Image.new("RGB", (8, 8)).save(folder / "b.png")
    (folder / "inside.png").symlink_to(folder / "b.png")    # a link that stays in the folder is fine
    scan = scan_images([folder])
    assert [p.name for p in scan.files] == ["a.png", "b.png", "inside.png"]
    reasons = {p.name: why for p, why in scan.skipped}
    assert reasons == {"link.png": "a symbolic link that points outside the folder",
                       "notes.txt": reasons["notes.txt"]}
    assert "not an image file type" in reasons["notes.txt"]


def test_runs_refuse_links_out_of_the_folder_and_label_keys_that_are_paths(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("L", (28, 28)).save(folder / "a.png")
    secret = tmp_path / "secret.png"
    Image.new("L", (28, 28)).save(secret)
    (folder / "link.png").symlink_to(secret)
    (folder / "labels.json").write_text(json.dumps({"../secret.png": {"label": 3}, "/etc/hostname": 1,
                                                    "a.png": {"label": 2}}))
    _, items = plan_items(folder)
    by_id = {it.item_id: it for it in items}
    assert by_id["link.png"].error == "link.png is a symbolic link that points outside the folder"
    assert by_id["a.png"].label == 2 and by_id["a.png"].error is None
    # label keys are reduced to file names: they can neither reach the file outside nor probe for /etc/hostname
    assert by_id["secret.png"].source == str(folder.resolve() / "secret.png")
    assert "does not exist in" in by_id["secret.png"].error
    assert "does not exist in" in by_id["hostname"].error
    assert all(str(tmp_path) in it.source or it.source.startswith(str(folder.resolve())) for it in items)
    assert all(not it.source.startswith("/etc") for it in items)


@pytest.mark.parametrize("n", [0, -2, 1.5, True])
def test_runs_refuse_a_bad_number_of_images(tmp_path, n):
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    with pytest.raises((ValueError, TypeError), match="n_images must be an integer >= 1"):
        plan_items(tmp_path, n_images=n)
