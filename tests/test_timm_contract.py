"""Every image method on a tiny timm ViT (random weights): the contract's core checks where timm is installed.

Runs in CI's second environment (torch 2.14.1 + torchvision 0.29.1 + timm, ``pytest -m vision``); skipped where timm
cannot be imported (the default CPU torch 2.13.0 has no torchvision that imports).
"""
from __future__ import annotations

import pytest
import torch

import pathxai as px
from method_params import FAST_PARAMS

pytestmark = pytest.mark.vision
timm = pytest.importorskip("timm")

IMAGE_METHODS = [n for n in px.list_methods() if 4 in px.get_method(n).input_ndim and px.get_method(n).needs_target]


@pytest.fixture(scope="module")
def timm_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    net = timm.models.VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                                       num_heads=4, mlp_ratio=2.0)
    for p in net.parameters():   # far-from-uniform attention, so that maps differ between methods and seeds
        p.data.mul_(4.0)
    return px.models.adapt(net, input_size=(28, 28), channels=1, name="tiny-timm-vit").eval()


def make(name: str, model, **kwargs):
    return px.get_method(name)(model, **{**FAST_PARAMS.get(name, {}), **kwargs})


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_image_method_on_a_timm_vit(name, timm_vit, digit_batch):
    x, y = digit_batch
    e = make(name, timm_vit, batch_size=4, seed=2).explain(x, y)
    assert e.attribution.shape[0] == 3 and e.attribution.dtype == torch.float32
    assert torch.isfinite(e.attribution).all() and e.saliency().shape == (3, 28, 28)
    again = make(name, timm_vit, batch_size=1, seed=2).explain(x, y)
    diff = (again.attribution - e.attribution).norm() / e.attribution.norm().clamp_min(1e-12)
    assert diff < 1e-4, f"batch size 1 vs 4: {float(diff):.2e}"


def test_gradcam_on_a_timm_vit_uses_the_last_blocks_tokens(timm_vit, digit_batch):
    x, y = digit_batch
    e = make("gradcam", timm_vit, batch_size=4).explain(x, y)
    assert e.meta["params"]["layer"].endswith("blocks.1.norm1")
    assert e.extras["layout"] == "tokens" and e.attribution.shape == (3, 1, 4, 4)   # the 4 x 4 patch grid
