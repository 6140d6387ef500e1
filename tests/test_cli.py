"""The command line as a user runs it."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pathxai as px
from pathxai.cli import app

runner = CliRunner()


def test_methods_lists_every_method():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in px.list_methods():
        assert name in result.output


def test_help_explains_the_quick_start():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "pathxai explain --demo" in result.output
    result = runner.invoke(app, ["explain", "--help"])
    assert result.exit_code == 0 and "--batch-size" in result.output


@pytest.fixture()
def digit_pngs(tmp_path):
    x, _ = px.data.digits("test")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).save(folder / f"digit{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_explain_a_folder_with_the_digits_model(digit_pngs, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(digit_pngs), "--model", "digits-cnn", "--method", "gradcam",
                                 "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "digit0: predicted 0" in result.output
    for i in range(2):
        assert (out / f"digit{i}_gradcam.png").stat().st_size > 5000
        data = np.load(out / f"digit{i}_gradcam.npz")
        assert data["saliency"].shape == (1, 28, 28)


def test_explain_with_a_class_name_and_method_params(digit_pngs, tmp_path):
    result = runner.invoke(app, ["explain", str(digit_pngs / "digit0.png"), "--model", "digits-cnn", "--method", "ig",
                                 "-p", "n_steps=4", "--target", "3", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "explained class 3 with ig" in result.output
    meta = np.load(tmp_path / "digit0_ig.npz")["meta_json"]
    assert '"n_steps": 4' in str(meta)


def test_demo_prints_egyptian_cat(tmp_path):
    result = runner.invoke(app, ["explain", "--demo", "--method", "gradcam", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "predicted Egyptian cat (class 285" in result.output
    assert (tmp_path / "chelsea_gradcam.png").exists() and (tmp_path / "chelsea_gradcam.npz").exists()


@pytest.mark.parametrize("args,message", [
    (["explain"], "give image files or folders, or --demo"),
    (["explain", "--demo", "--method", "nope"], "unknown method 'nope'"),
    (["explain", "--demo", "--model", "resnet"], "unknown model 'resnet'"),
    (["explain", "/no/such/file.png"], "does not exist"),
    (["explain", "--demo", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["explain", "--demo", "--target", "zzzz"], "unknown class name 'zzzz'"),
])
def test_bad_arguments_exit_with_a_message(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()) or message in str(result.output)
