"""The command line under misuse: one-line errors with Click's exit codes, inputs that cannot be read, every method,
colliding output names, readable demo pictures, help texts, file modes and progress on long phases."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import pathxai as px
from method_params import FAST_PARAMS
from pathxai.cli import app

runner = CliRunner()


def _one_line_error(result, exit_code: int = 2) -> str:
    """The run failed with ``exit_code``, printed no traceback, and its stderr is a single ``error: ...`` line."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "╭" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture()
def digit_png(tmp_path) -> Path:
    x, _ = px.data.digits("test")
    path = tmp_path / "digit0.png"
    Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def pickled_model(tmp_path) -> Path:
    """A whole pickled module (torch.save(model)): refused unless trusted."""
    path = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)), path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# 1. usage errors: one line, exit 2, no traceback


def _usage_cases(tmp_path: Path, digit_png: Path, pickled_model: Path) -> dict[str, tuple[list[str], str]]:
    existing_file = tmp_path / "taken.txt"
    existing_file.write_text("x")
    explain = ["explain", str(digit_png), "-m", "digits-cnn", "--method", "ig", "--no-progress",
               "-o", str(tmp_path / "out")]
    return {
        "param not a number": (explain + ["-p", "n_steps=abc"], "n_steps must be an integer"),
        "param out of range": (explain + ["-p", "n_steps=-3"], "n_steps must be an integer >= 1, got -3"),
        "unknown param": (explain + ["-p", "nosuch=1"], "method 'ig' has no parameter 'nosuch'; its parameters:"),
        "negative target": (explain + ["--target", "-1"], "--target must be 'auto', a class index >= 0"),
        "target too large": (explain + ["--target", "10"], "--target 10 is out of range: the model has 10 classes"),
        "out is a file": (explain[:-1] + [str(existing_file)], "is an existing file"),
        "untrusted model": (["explain", str(digit_png), "-m", str(pickled_model), "--size", "8", "-o",
                             str(tmp_path / "o")], "holds a pickled Python object"),
        "named non-image": (["explain", str(existing_file), "-m", "digits-cnn"], "is not an image file"),
        "option parse error": (explain + ["--seed", "abc"], "--seed"),
        "evaluate out is a file": (["evaluate", "--suite", "digits", "--methods", "saliency", "--metrics",
                                    "pointing", "-o", str(existing_file)], "is an existing file"),
        "evaluate unknown param": (["evaluate", "--suite", "digits", "--methods", "rise", "-p", "rise.nosuch=1"],
                                   "no parameter 'nosuch'"),
        "bench unknown method": (["bench", "--methods", "nope"], "unknown method 'nope'"),
        "run out is a file": (["run", "digits", "-o", str(existing_file)], "is an existing file"),
        "report of no run": (["report", str(tmp_path / "no-such-run")], "no-such-run"),
        "denoise eval of no run": (["denoise", "eval", str(tmp_path / "no-such-run")], "no-such-run"),
    }


@pytest.mark.parametrize("case", ["param not a number", "param out of range", "unknown param", "negative target",
                                  "target too large", "out is a file", "untrusted model", "named non-image",
                                  "option parse error", "evaluate out is a file", "evaluate unknown param",
                                  "bench unknown method", "run out is a file", "report of no run",
                                  "denoise eval of no run"])
def test_usage_errors_are_one_line_with_exit_code_2(case, tmp_path, digit_png, pickled_model):
    args, message = _usage_cases(tmp_path, digit_png, pickled_model)[case]
    line = _one_line_error(runner.invoke(app, args))
    assert message in line


def test_debug_env_shows_the_traceback(tmp_path, digit_png, monkeypatch):
    monkeypatch.setenv("PATHXAI_DEBUG", "1")
    result = runner.invoke(app, ["explain", str(digit_png), "-m", "digits-cnn", "-p", "n_steps=abc",
                                 "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr and "check_positive_int" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: n_steps must be an integer")


def test_unexpected_errors_are_one_line_with_the_type_and_exit_code_1(tmp_path, digit_png, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(px.models, "load", broken)
    line = _one_line_error(runner.invoke(app, ["explain", str(digit_png), "-o", str(tmp_path)]), exit_code=1)
    assert line == "error: RuntimeError: boom (set PATHXAI_DEBUG=1 for the traceback)"


def test_a_missing_optional_dependency_names_the_pip_command(tmp_path, digit_png, monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(px.models, "load", missing)
    line = _one_line_error(runner.invoke(app, ["explain", str(digit_png), "-o", str(tmp_path)]))
    assert 'pip install "pathxai[text]"' in line


def test_ctrl_c_in_run_says_the_results_are_saved_and_exits_130(tmp_path, monkeypatch):
    import pathxai.runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pathxai.runs, "run", interrupted)
    line = _one_line_error(runner.invoke(app, ["run", "digits", "-o", str(tmp_path / "run")]), exit_code=130)
    assert "results so far are saved in" in line and "re-running the same command resumes" in line


# ---------------------------------------------------------------------------------------------------------------
# 9. --trust-model-file


def test_a_pickled_model_file_needs_trust_model_file(tmp_path, pickled_model):
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img)
    args = ["explain", str(img), "-m", str(pickled_model), "--size", "8", "--method", "saliency", "--no-progress",
            "-o", str(tmp_path / "out")]
    line = _one_line_error(runner.invoke(app, args))
    assert "--trust-model-file" in line and not (tmp_path / "out").exists()
    result = runner.invoke(app, args + ["--trust-model-file"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "img_saliency.png").exists()
    for command in ("explain", "bench"):
        text = " ".join(runner.invoke(app, [command, "--help"]).output.split())
        assert "--trust-model-file" in text and "runs code from the file: only for files you trust" in text


# ---------------------------------------------------------------------------------------------------------------
# 2. files and folders: explain what can be read, report the rest


def test_a_folder_with_unreadable_and_converted_images(tmp_path, digit_png):
    folder = tmp_path / "mixed"
    folder.mkdir()
    digit = np.asarray(Image.open(digit_png))
    Image.fromarray(digit).save(folder / "a_good.png")
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, np.where(digit > 0, 255, 0)
    Image.fromarray(rgba, "RGBA").save(folder / "b_rgba.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(folder / "c_16bit.png")
    Image.fromarray(np.repeat(digit[..., None], 3, 2)).save(folder / "d_full.jpg", quality=95)
    data = (folder / "d_full.jpg").read_bytes()
    (folder / "d_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "d_full.jpg").unlink()
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(folder), "-m", "digits-cnn", "--method", "gradcam", "-o", str(out)])
    assert result.exit_code == 1, result.output   # some inputs failed, the rest were written
    assert "Traceback" not in result.output
    err = result.stderr
    assert f"failed {folder / 'd_truncated.jpg'}: cannot read image" in err
    assert f"skipped {folder / 'notes.txt'}: not an image file type" in err
    assert f"{folder / 'b_rgba.png'}: note: " in err and "composited on white" in err
    assert f"{folder / 'c_16bit.png'}: note: 16-bit grey image" in err
    assert "explained 3 of 4 images; 1 failed" in err
    for name in ("a_good", "b_rgba", "c_16bit"):
        assert (out / f"{name}_gradcam.png").exists() and (out / f"{name}_gradcam.npz").exists()


def test_a_colour_photo_on_the_digits_model_is_flagged_as_far_from_its_data(tmp_path, digit_png):
    photo = tmp_path / "chelsea.png"
    Image.fromarray(px.data.sample_images(["chelsea"])[0].image).save(photo)
    grey_as_rgb = tmp_path / "digit_rgb.png"
    Image.open(digit_png).convert("RGB").save(grey_as_rgb)
    result = runner.invoke(app, ["explain", str(photo), str(grey_as_rgb), "-m", "digits-cnn", "--method",
                                 "saliency", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    photo_lines = [line for line in result.stderr.splitlines() if line.startswith(str(photo))]
    assert any("warning: far from the model's data" in line and "colour image" in line for line in photo_lines)
    assert any("warning: far from the model's data" in line and "shrunk 11x" in line for line in photo_lines)
    # a grey digit saved as RGB is not colour: no warning for it
    assert not any("warning" in line for line in result.stderr.splitlines() if line.startswith(str(grey_as_rgb)))


# ---------------------------------------------------------------------------------------------------------------
# 3. every registered method runs from `pathxai explain` or is refused up front


@pytest.mark.parametrize("name", px.list_methods())
def test_every_method_runs_from_explain_or_is_refused_before_any_work(name, digit_png, tmp_path, monkeypatch):
    loads: list[str] = []
    real_load = px.models.load

    def counting_load(model_name, **kwargs):
        loads.append(model_name)
        return real_load(model_name, **kwargs)

    monkeypatch.setattr(px.models, "load", counting_load)
    out = tmp_path / "out"
    args = ["explain", str(digit_png), "-m", "digits-cnn", "--method", name, "-b", "8", "--no-progress",
            "-o", str(out)]
    for key, value in FAST_PARAMS.get(name, {}).items():
        args += ["-p", f"{key}={value}"]
    result = runner.invoke(app, args)
    cls = px.get_method(name)
    if result.exit_code == 0:
        stem = out / f"digit0_{cls.name}"
        assert stem.with_suffix(".png").stat().st_size > 5000 and stem.with_suffix(".npz").exists()
        if cls.needs_target:
            assert "digit0: predicted" in result.output and f"with {cls.name}" in result.output
        else:   # a representation method: the classifier's feature extractor, no class
            assert loads == ["digits-cnn-features"]
            assert ("explained the representation of digits-cnn-features (the feature extractor of digits-cnn; "
                    "no class)") in result.output
    elif getattr(cls, "needs_transformer", False):
        # whether a model is a vision transformer shows once it is loaded: refused then, before any explaining
        line = _one_line_error(result)
        assert "needs a vision transformer" in line and result.exit_code == 2
        assert not out.exists()
    else:
        line = _one_line_error(result)
        assert f"method {cls.name!r} needs" in line and "use it from Python" in line
        assert loads == [] and not out.exists()   # refused before loading the model or writing anything


def test_a_representation_method_on_a_model_without_an_encoder_is_refused(tmp_path, digit_png, pickled_model):
    line = _one_line_error(runner.invoke(app, ["explain", str(digit_png), "-m", str(pickled_model), "--method",
                                               "relax", "-o", str(tmp_path / "out")]))
    assert "has no known feature extractor" in line and "digits-cnn -> digits-cnn-features" in line
    line = _one_line_error(runner.invoke(app, ["explain", str(digit_png), "-m", "digits-cnn", "--method", "relax",
                                               "--target", "3", "-o", str(tmp_path / "out")]))
    assert "explains a representation (no class)" in line
    line = _one_line_error(runner.invoke(app, ["explain", str(digit_png), "-m", "digits-cnn-features", "--method",
                                               "ig", "-o", str(tmp_path / "out")]))
    assert "is an encoder (a representation, no classes)" in line and "relax" in line


# ---------------------------------------------------------------------------------------------------------------
# 4. output names never collide


def test_same_named_inputs_get_distinct_outputs(tmp_path, digit_png):
    x, _ = px.data.digits("test")
    for folder, index in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        Image.fromarray((x[index, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / folder / "coffee.png")
    Image.fromarray((x[2, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "b" / "coffee.jpg")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(tmp_path / "a" / "coffee.png"), str(tmp_path / "b"), "-m",
                                 "digits-cnn", "--method", "saliency", "-o", str(out)])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 3, pngs
    for png in pngs:
        assert f"-> {out / png}" in result.output   # each output's place is printed
    saved = {np.load(p)["attribution"].tobytes() for p in out.glob("*.npz")}
    assert len(saved) == 3   # nothing was overwritten


# ---------------------------------------------------------------------------------------------------------------
# 5. the demo's picture reads as a heatmap


def test_speckled_signed_maps_are_shown_as_smoothed_magnitude_and_coherent_ones_signed():
    from pathxai.viz import display_map
    from pathxai.viz.heatmap import neighbour_correlation

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:224, :224]
    blob = np.exp(-((yy - 80) ** 2 + (xx - 140) ** 2) / (2 * 25.0 ** 2))
    attribution = blob[None] * rng.standard_normal((3, 224, 224))   # gradient-like: sign flips pixel to pixel
    d = display_map(attribution.sum(0), attribution)
    assert not d.signed and d.label.startswith("|attribution| (sum over channels of |a|)") and "smoothed" in d.label
    # what was drawn before (the signed map) has no structure at 4 px; what is drawn now has
    assert abs(neighbour_correlation(attribution.sum(0), 4)) < 0.1 and neighbour_correlation(d.values, 4) > 0.8
    coherent = blob - np.roll(blob, 90, axis=1)   # a positive and a negative region
    d = display_map(coherent)
    assert d.signed and d.smoothing_sigma == 0 and d.vmin == -d.vmax


def test_the_demo_overlay_shows_the_magnitude_and_the_npz_keeps_the_signed_map(tmp_path, monkeypatch):
    import pathxai.viz.heatmap as heatmap

    shown = []
    real = heatmap.display_map
    monkeypatch.setattr(heatmap, "display_map", lambda *a, **k: shown.append(real(*a, **k)) or shown[-1])
    result = runner.invoke(app, ["explain", "--demo", "--method", "gradient_x_input", "--no-progress",
                                 "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (d,) = shown
    assert not d.signed and "|attribution|" in d.label and d.smoothing_sigma == 2.0
    raw = np.load(tmp_path / "chelsea_gradient_x_input.npz")["attribution"]
    assert raw.shape == (1, 3, 224, 224) and raw.min() < 0 < raw.max()


# ---------------------------------------------------------------------------------------------------------------
# 6. help texts render


def _command_paths(command, prefix=()):
    yield list(prefix)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*prefix, name))


def test_every_help_text_renders_its_brackets_and_punctuation():
    import typer

    root = typer.main.get_command(app)
    paths = list(_command_paths(root))
    assert ["explain"] in paths and ["denoise", "eval"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = " ".join(result.output.split())
        assert not re.search(r"\w\s+[.,;:](\s|$)", text), (path, re.search(r".{30}\w\s+[.,;:](\s|$)", text))
        command = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            for bracketed in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                assert bracketed in text, (path, param.name, bracketed)


# ---------------------------------------------------------------------------------------------------------------
# 7. file modes


def test_explain_evaluate_and_run_write_files_with_the_same_mode(tmp_path, digit_png):
    old = os.umask(0o022)
    try:
        results = [
            runner.invoke(app, ["explain", str(digit_png), "-m", "digits-cnn", "--method", "ablation_path", "-p",
                                "n_steps=4", "-p", "mask_size=14", "-p", "max_iterations=2", "-p",
                                "min_iterations=1", "-o", str(tmp_path / "explain")]),
            runner.invoke(app, ["evaluate", "--suite", "digits", "-n", "2", "--methods", "saliency", "--metrics",
                                "pointing", "-b", "4", "-o", str(tmp_path / "evaluate")]),
            runner.invoke(app, ["run", "digits", "--methods", "saliency", "--metrics", "pointing", "-n", "2",
                                "--no-progress", "-o", str(tmp_path / "run")]),
        ]
    finally:
        os.umask(old)
    for r in results:
        assert r.exit_code == 0, r.output
    modes = {}
    for folder in ("explain", "evaluate", "run"):
        files = [p for p in (tmp_path / folder).rglob("*") if p.is_file()]
        assert files, folder
        modes[folder] = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert any(name.endswith("_path.png") for name in modes["explain"])
    assert {m for ms in modes.values() for m in ms.values()} == {oct(0o644)}, modes


# ---------------------------------------------------------------------------------------------------------------
# 8. progress on long phases


def test_bench_reports_each_memory_measurement_as_it_goes(monkeypatch):
    import pathxai.bench as bench_lib

    measured = []

    def fake_measure(name, model, x, target, batch_size, params):   # no fresh processes in a fast test
        measured.append(params)
        return (1 + len(measured)) * 2**20

    monkeypatch.setattr(bench_lib, "_measure_in_fresh_process", fake_measure)
    result = runner.invoke(app, ["bench", "--methods", "ig", "-p", "ig.n_steps=2", "--model", "digits-cnn",
                                 "--repeats", "1", "-b", "4"])
    assert result.exit_code == 0, result.output
    assert [p["n_steps"] for p in measured] == [2, 20]
    lines = [line for line in result.stderr.splitlines() if line.startswith("memory: ig n_steps=")]
    assert len(lines) == 4 and "(1/2): measuring peak memory" in lines[0] and "2.0 MiB" in lines[1]
    assert "| ig | n_steps | 2 → 20 |" in result.stdout


def test_denoise_eval_says_which_direction_is_better(tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["denoise", "train", "--n-train", "8", "--n-val", "4", "--epochs", "1", "--size",
                                 "17", "--channels", "2", "--depth", "2", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["denoise", "eval", str(run_dir), "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("lower is better for every score: val MSE/noisy")


def test_map_error_adds_a_one_line_rule_for_a_library_exception(tmp_path, monkeypatch):
    import pathxai.cli as cli
    import pathxai.runs

    class LockedError(RuntimeError):
        pass

    def locked(*args, **kwargs):
        raise LockedError("run folder is in use by process 123")

    monkeypatch.setattr(cli, "ERROR_RULES", list(cli.ERROR_RULES))
    monkeypatch.setattr(pathxai.runs, "run", locked)
    args = ["run", "digits", "-o", str(tmp_path / "run")]
    assert _one_line_error(runner.invoke(app, args), exit_code=1).startswith("error: LockedError: run folder")
    cli.map_error(LockedError, 75, "wait for it to finish")
    cli.map_error(LockedError, 75, "wait for it to finish")   # idempotent
    assert sum(LockedError in r.types for r in cli.ERROR_RULES) == 1
    line = _one_line_error(runner.invoke(app, args), exit_code=75)
    assert line == "error: run folder is in use by process 123 (wait for it to finish)"


def test_run_and_report_errors_from_the_store_are_one_line(tmp_path):
    """The run lock held by another writer, a report folder the report did not make, and a pickled model file in a
    run: each one line with exit code 2; --force and --trust-model-file lift the last two."""
    from pathxai.runs.store import RunStore

    out = tmp_path / "run"
    args = ["run", "digits", "--methods", "saliency", "-n", "2", "--steps", "3", "--no-progress", "--out", str(out)]
    with RunStore(out):                                   # another process would hold this lock
        result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "another process is writing the run" in result.output
    assert runner.invoke(app, args).exit_code == 0
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["report", str(out), "--out", str(taken)])
    assert result.exit_code == 2 and "--force" in result.output and "Traceback" not in result.output
    assert runner.invoke(app, ["report", str(out), "--out", str(taken), "--force"]).exit_code == 0
    assert (taken / "notes.txt").read_text() == "keep me" and (taken / "index.html").exists()

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    torch.save(model, tmp_path / "whole.pt")
    pickled = ["run", "digits", "--model", str(tmp_path / "whole.pt"), "--methods", "saliency", "-n", "2",
               "--steps", "3", "--no-progress"]
    result = runner.invoke(app, pickled + ["--out", str(tmp_path / "p1")])
    assert result.exit_code == 2 and "--trust-model-file" in result.output
    result = runner.invoke(app, pickled + ["--out", str(tmp_path / "p2"), "--trust-model-file"])
    assert result.exit_code == 0, result.output


def test_bench_feeds_every_bundled_image_model_an_input_of_its_shape():
    """`pathxai bench --model clutter-vit` used to feed a 28 x 28 digit to a 64 x 64 model."""
    from pathxai.cli import _bench_input

    for name, shape in [("digits-cnn", (1, 1, 28, 28)), ("digits-clutter-cnn", (1, 1, 64, 64))]:
        x = _bench_input(px.models.load(name))
        assert tuple(x.shape) == shape and x.dtype == torch.float32
