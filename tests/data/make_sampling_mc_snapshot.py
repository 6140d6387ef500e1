"""Outputs of every sampling method's plain Monte Carlo on small digits inputs, for tests/test_sampling.py.

``sampling_mc_snapshot.pt`` was written by running this file against the code before the sampling layer existed
(commit 2795b57, whose methods took no ``sampling`` argument)::

    git archive 2795b57 src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src OMP_NUM_THREADS=1 python tests/data/make_sampling_mc_snapshot.py --legacy

The test recomputes the same outputs with ``sampling="mc"`` (``"iid"`` for RELAX, whose paper sampling already had
that name) and compares them bit for bit.
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch

import pathxai as px

SNAPSHOT = Path(__file__).with_name("sampling_mc_snapshot.pt")


class Upsampled(torch.nn.Module):
    """The digits CNN on 48 x 48 inputs (resized to its 28 x 28), so that SIFT finds a few keypoints."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.nn.functional.interpolate(z, size=(28, 28), mode="bilinear", align_corners=False))


def outputs(legacy: bool) -> dict[str, torch.Tensor]:
    """{name: tensor} of the plain Monte Carlo results (``legacy``: call the methods without ``sampling``)."""
    from pathxai.methods.fisher import ConvCovariance

    torch.set_num_threads(1)
    model = px.models.load("digits-cnn")
    x, y = px.data.digits("test")
    x, y = x[:3].clone(), y[:3].clone()
    mc = {} if legacy else {"sampling": "mc"}
    out: dict[str, torch.Tensor] = {}
    out["rise"] = px.get_method("rise")(model, n_masks=70, seed=3, batch_size=5, **mc).explain(x, y).attribution
    for name in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        out[name] = px.get_method(name)(model, n_samples=9, seed=3, batch_size=4, **mc).explain(x, y).attribution
    e = px.get_method("fi")(model, n_samples=9, seed=3, batch_size=4, **mc).explain(x, y)
    out["fi"], out["fi_mean_f"] = e.attribution, e.extras["mean_f"]
    cov = ConvCovariance(torch.tensor([[0.1, 0.2, 0.1], [0.2, 1.0, 0.2], [0.1, 0.2, 0.1]]))
    out["fi_conv"] = px.get_method("fi")(model, n_samples=9, seed=3, batch_size=4, covariance=cov,
                                         **mc).explain(x, y).attribution
    for name in ("lime", "kernel_shap"):
        out[name] = px.get_method(name)(model, n_samples=40, seed=3, batch_size=6, **mc).explain(x, y).attribution
    big = torch.nn.functional.interpolate(x[:2], size=(48, 48), mode="bilinear", align_corners=False)
    e = px.get_method("sift_rise")(Upsampled(model), n_masks=70, seed=3, batch_size=8, **mc).explain(big, y[:2])
    out["sift_rise"] = e.attribution
    for i, imp in enumerate(e.extras["feature_importance"]):
        out[f"sift_rise_features_{i}"] = imp
    enc = px.models.encoders.digits_cnn_features()
    iid = {"sampling": "iid"} if legacy else {"sampling": "mc"}
    e = px.get_method("relax")(enc, n_masks=70, seed=3, batch_size=8, **iid).explain(x)
    out["relax"], out["relax_uncertainty"] = e.attribution, e.extras["uncertainty"]
    return {k: v.detach().clone() for k, v in out.items()}


if __name__ == "__main__":
    if "--legacy" not in sys.argv:
        raise SystemExit("run with --legacy against the code before the sampling layer (see the module doc)")
    torch.save({"outputs": outputs(legacy=True), "torch": str(torch.__version__), "machine": platform.machine(),
                "processor": platform.processor()}, SNAPSHOT)
    print(f"wrote {SNAPSHOT}")
