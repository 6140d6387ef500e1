"""Evaluation suites with known ground truth: determinism, boxes/masks, the photos' classes, the clutter CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pathxai as px
from pathxai.data.suites import clutter_dataset


def _same(a: px.data.Suite, b: px.data.Suite) -> bool:
    if len(a) != len(b):
        return False
    for p, q in zip(a.items, b.items):
        if (p.name, p.label, p.boxes, p.difficult) != (q.name, q.label, q.boxes, q.difficult):
            return False
        if not torch.equal(p.image, q.image):
            return False
        if (p.mask is None) != (q.mask is None) or (p.mask is not None and not torch.equal(p.mask, q.mask)):
            return False
    return True


def _check_geometry(suite: px.data.Suite) -> None:
    for it in suite.items:
        c, h, w = it.image.shape
        assert it.image.dtype == torch.float32 and 0 <= float(it.image.min()) and float(it.image.max()) <= 1
        assert it.boxes, it.name
        assert it.mask is not None and it.mask.shape == (h, w) and it.mask.dtype == torch.bool and it.mask.any()
        outside = it.mask.clone()
        for x0, y0, x1, y1 in it.boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (it.name, it.boxes)
            outside[y0:y1, x0:x1] = False
        assert not outside.any(), f"{it.name}: object mask sticks out of its box"
        # the box is tight: every edge row/column of the box touches the object
        x0, y0, x1, y1 = it.boxes[0]
        m = it.mask[y0:y1, x0:x1]
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any(), it.name


@pytest.fixture(scope="module")
def photos() -> px.data.Suite:
    return px.data.load_suite("photos")   # default: 3 photos + 57 composites, top-5 rule


def test_list_and_bad_name() -> None:
    assert px.data.list_suites() == ["digits", "digits-clutter", "photos"]
    with pytest.raises(ValueError, match="digits, digits-clutter, photos"):
        px.data.load_suite("mnist")
    with pytest.raises(ValueError, match="n_images"):
        px.data.load_suite("digits", n_images=0)
    with pytest.raises(TypeError, match="option"):
        px.data.load_suite("digits", top_k=3)
    assert "digits-clutter-cnn" in px.models.available()


# --- digits ------------------------------------------------------------------------------------------------------


def test_digits_suite() -> None:
    a = px.data.load_suite("digits", n_images=40, seed=0)
    assert _same(a, px.data.load_suite("digits", n_images=40, seed=0))
    assert not _same(a, px.data.load_suite("digits", n_images=40, seed=1))
    assert len(px.data.load_suite("digits")) == len(px.data.digits("test")[1])
    _check_geometry(a)
    x, y, boxes = a.batch()
    assert x.shape == (40, 1, 28, 28) and y.dtype == torch.int64 and len(boxes) == 40
    xt, yt = px.data.digits("test")
    for it in a.items:
        i = it.meta["test_index"]
        assert torch.equal(it.image, xt[i]) and it.label == int(yt[i])
        assert torch.equal(it.mask, xt[i, 0] > 0.2)   # the mask is the ink; the box its bounding box
    assert a.model_name == "digits-cnn"


# --- digits-clutter ----------------------------------------------------------------------------------------------


def test_clutter_determinism_and_geometry() -> None:
    a = px.data.load_suite("digits-clutter", n_images=30, seed=0)
    assert _same(a, px.data.load_suite("digits-clutter", n_images=30, seed=0))
    assert not _same(a, px.data.load_suite("digits-clutter", n_images=30, seed=1))
    # a canvas does not depend on how many are asked for
    assert _same(px.data.load_suite("digits-clutter", n_images=10, seed=0),
                 px.data.Suite("digits-clutter", a.items[:10], a.model_name, 0))
    _check_geometry(a)
    x, y, boxes = a.batch([0, 3, 5])
    assert x.shape == (3, 1, 64, 64) and y.tolist() == [a[0].label, a[3].label, a[5].label]
    empty = px.data.load_suite("digits-clutter", n_images=30, seed=0, with_digit=False)
    for it, bare in zip(a.items, empty.items):
        x0, y0, x1, y1 = it.boxes[0]
        # distractors never enter the digit's box: without the digit the box is black, and all that differs
        # between the two canvases is the digit (inside its box)
        assert float(bare.image[0, y0:y1, x0:x1].abs().max()) == 0.0, it.name
        diff = (it.image[0] != bare.image[0])
        assert not diff[:y0].any() and not diff[y1:].any() and not diff[:, :x0].any() and not diff[:, x1:].any()
        # the digit's ink is on the canvas where the mask says
        assert bool((it.image[0][it.mask] > 0.2).all())
        assert it.meta["distractors"] >= 1
    # fragments etc. put ink outside the box on every canvas
    assert all(float(e.image.sum()) > 5 for e in empty.items)


def test_clutter_dataset_matches_suite() -> None:
    x, y = clutter_dataset("test", 8, seed=0)
    s = px.data.load_suite("digits-clutter", n_images=8, seed=0)
    assert torch.equal(x, s.batch()[0]) and torch.equal(y, s.batch()[1])
    # train and test canvases come from different digits
    xtr, _ = clutter_dataset("train", 8, seed=0)
    assert not torch.equal(xtr, x)


def test_clutter_cnn_depends_on_the_digit() -> None:
    from pathxai.models.clutter import evaluate_clutter_cnn

    model = px.models.load("digits-clutter-cnn")   # trained once (under a minute), then cached
    assert model.input_size == (64, 64) and model.class_names == [str(i) for i in range(10)]
    acc = evaluate_clutter_cnn(model.net)
    no_digit = evaluate_clutter_cnn(model.net, with_digit=False)
    assert acc >= 0.9, acc
    assert no_digit <= 0.2, no_digit          # chance is 0.1
    assert acc == pytest.approx(model.test_accuracy, abs=1e-6)
    # the suite's model is the same one and reads the suite's canvases
    suite = px.data.load_suite("digits-clutter", n_images=50)
    x, y, _ = suite.batch()
    with torch.no_grad():
        assert float((suite.model()(x).argmax(1) == y).float().mean()) >= 0.8


# --- photos ------------------------------------------------------------------------------------------------------


def test_photos_determinism_without_model() -> None:
    a = px.data.load_suite("photos", n_images=7, seed=0, check_model=False)
    assert _same(a, px.data.load_suite("photos", n_images=7, seed=0, check_model=False))
    b = px.data.load_suite("photos", n_images=7, seed=1, check_model=False)
    assert not _same(a, b)
    assert [it.name for it in a.items[:3]] == ["photo-chelsea", "photo-coffee", "photo-rocket"]
    assert _same(px.data.Suite("photos", a.items[:3], "", 0), px.data.Suite("photos", b.items[:3], "", 1))
    _check_geometry(a)
    _check_geometry(b)
    for it in a.items[3:]:
        assert it.image.shape == (3, 224, 224)
        m = it.meta
        assert m["background"] != m["source"] and not (m["object"] == "rocket" and m["background"] == "astronaut")
        # the mask covers a sensible share of the canvas and its box is within the pasted size
        area = float(it.mask.float().mean())
        assert 0.02 < area < 0.8, (it.name, area)
        x0, y0, x1, y1 = it.boxes[0]
        assert max(x1 - x0, y1 - y0) == pytest.approx(m["object_fraction"] * 224, abs=2)


def test_composite_pastes_the_object() -> None:
    # inside the mask the composite shows the object; outside, the background crop
    from pathxai.data import suites as S

    r = S._composite(4, seed=0)
    obj = next(o for o in S._OBJECTS if o.key == r["meta"]["object"])
    bx0, by0, bx1, by1 = r["meta"]["background_crop"]
    bg = S._resize(S._skimage_photo(r["meta"]["background"])[by0:by1, bx0:bx1], (224, 224))
    assert np.array_equal(r["image"][~r["mask"]], bg[~r["mask"]])
    assert not np.allclose(r["image"][r["mask"]], bg[r["mask"]], atol=0.02)
    assert obj.label == r["label"]


def test_composite_long_side_sets_the_object_size() -> None:
    from pathxai.data.photos import composite

    for i in range(3):   # each of the three objects
        r = composite(i, 0, long_side=(0.2, 0.2))
        ys, xs = np.nonzero(r["mask"])
        # the mask's bounding box is the resized cut-out's (its longer side 0.2 x 224 px, up to the hard paste)
        assert max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == pytest.approx(0.2 * 224, abs=2)
        assert r["meta"]["object_fraction"] == 0.2
        default = composite(i, 0)
        assert default["meta"]["object_fraction"] >= 0.45    # the suite's own range is untouched
    for bad in [(0.0, 0.2), (0.3, 0.2), (0.5, 1.5)]:
        with pytest.raises(ValueError, match="long_side must be"):
            composite(0, 0, long_side=bad)


def test_photos_top1_and_top5_rule(photos: px.data.Suite) -> None:
    from pathxai.suites import PHOTOS_DEFAULT as n

    assert n >= 60 and len(photos) == n and photos.model_name == "efficientnet-lite0"
    model = photos.model()
    x, labels, boxes = photos.batch()
    assert x.shape == (n, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
    # the bundled photos: top-1 is the sensible class
    assert out[:3].argmax(1).tolist() == [285, 967, 657]
    assert [it.label_name for it in photos.items[:3]] == ["Egyptian cat", "espresso", "missile"]
    # every composite kept has its label in the model's top 5; rank and difficult are recorded faithfully
    ranks = (out > out[torch.arange(n), labels][:, None]).sum(1)
    assert ranks.tolist() == [it.meta["rank"] for it in photos.items]
    assert all(r < 5 for r in ranks.tolist())
    assert [it.difficult for it in photos.items] == [r > 0 for r in ranks.tolist()]
    assert {it.meta["object"] for it in photos.items[3:]} >= {"cat", "cup"}
    assert photos.info["top5_accuracy"] == 1.0
    _check_geometry(photos)


def test_save_png(tmp_path, photos: px.data.Suite) -> None:
    paths = [photos.save_png(4, tmp_path / "photo.png"),
             px.data.save_item_png(px.data.load_suite("digits", n_images=1)[0], tmp_path / "digit.png"),
             px.data.load_suite("digits-clutter", n_images=1).save_png(0, tmp_path / "clutter.png")]
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clutter_training_is_deterministic() -> None:
    from pathxai.models.clutter import train_clutter_cnn

    threads = torch.get_num_threads()
    a, _ = train_clutter_cnn(n_train=128, epochs=1, seed=0, evaluate=False)
    b, _ = train_clutter_cnn(n_train=128, epochs=1, seed=0, evaluate=False)
    assert torch.get_num_threads() == threads
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
