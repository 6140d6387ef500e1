"""Bundled models and data: the real ImageNet model on real photos, the digits CNN, class names."""
from __future__ import annotations

import pytest
import torch

import pathxai as px
from pathxai.models import class_index, imagenet_class_names


def test_efficientnet_recognises_the_bundled_photos(efficientnet):
    for sample in px.data.sample_images():
        x = efficientnet.preprocess(sample.image)
        assert x.shape == (1, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
        with torch.inference_mode():
            probs = efficientnet(x).softmax(1)[0]
        assert int(probs.argmax()) == sample.label, sample.name
        assert efficientnet.class_names[sample.label] == sample.label_name


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[285] == "Egyptian cat" and names[967] == "espresso" and names[657] == "missile"
    assert class_index("Egyptian cat") == 285
    assert class_index("egyptian CAT") == 285
    assert class_index("tabby cat") == 281  # any lemma of a class
    with pytest.raises(ValueError, match="ambiguous"):
        class_index("crane")  # the bird (134) and the machine (517)
    with pytest.raises(ValueError, match="unknown class name 'zzzz'"):
        class_index("zzzz")


def test_digits_cnn_is_accurate_and_cached(digits_model):
    assert digits_model.test_accuracy >= 0.95
    x, y = px.data.digits("test")
    with torch.inference_mode():
        acc = float((digits_model(x).argmax(1) == y).float().mean())
    assert abs(acc - digits_model.test_accuracy) < 1e-6
    again = px.models.load("digits-cnn")
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), digits_model.parameters()))
    assert digits_model.input_shape == (1, 28, 28)


def test_digits_splits_are_disjoint_and_cover_every_class():
    xtr, ytr = px.data.digits("train")
    xte, yte = px.data.digits("test")
    assert len(ytr) + len(yte) == 1797
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    assert xtr.shape[1:] == (1, 28, 28) and float(xtr.max()) <= 1.0
    with pytest.raises(ValueError, match="split must be"):
        px.data.digits("validation")


def test_model_loading_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        px.models.load("resnet")
    with pytest.raises(FileNotFoundError):
        px.models.load(str(tmp_path / "missing.pt"))
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="holds a state dict"):
        px.models.load(str(path))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    torch.save(model, tmp_path / "m.pt")
    # a whole pickled module runs code when unpickled: only with an explicit opt-in (tests/test_hardening_files.py)
    with pytest.raises(ValueError, match="holds a pickled Python object.*trust=True"):
        px.models.load(str(tmp_path / "m.pt"))
    assert isinstance(px.models.load(str(tmp_path / "m.pt"), trust=True), torch.nn.Sequential)
