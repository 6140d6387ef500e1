"""SIFT-based ablation (thesis ch. 4): exact reconstruction, decoder linearity, cells, keypoints, paths, SIFT-RISE,
SIFT-RELAX."""
from __future__ import annotations

import pytest
import torch

import pathxai as px
from pathxai.methods.relax import masks_needed
from pathxai.methods.sift_ablation import (SiftAblationPath, SiftRELAX, SiftRISE, decompose, detect_keypoints,
                                           draw_keypoints, path_strip, reconstruct, sift_decompose, sigma_grid,
                                           sparse_cells)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """scikit-image's chelsea at 112 x 112 (3, 112, 112) float64: a real image, small enough for fast tests."""
    img = px.data.sample_images()[0].image
    x = torch.as_tensor(img).permute(2, 0, 1).double() / 255.0 if img.ndim == 3 and img.shape[-1] == 3 else img
    return torch.nn.functional.interpolate(x[None].double(), size=(112, 112), mode="bilinear",
                                           antialias=True)[0]


@pytest.fixture(scope="module")
def photo_decoder(photo):
    return sift_decompose(photo)


def random_image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- scale space
def test_sigma_grid_follows_eq_4_36_and_table_4_1():
    g = sigma_grid((224, 224), sigma_min=0.8, octave_steps=3)
    assert g.edges[0] == 0 and torch.allclose(g.edges[2] / g.edges[1], torch.tensor(2 ** (1 / 3), dtype=torch.float64))
    assert float(g.edges[-1]) <= 224 / 4 + 1e-9
    # level rho holds sigma >= 2.25 pixels of that level: 4.5 and 9 input pixels
    assert (g.levels[g.edges < 4.5] == 0).all() and (g.levels[(g.edges >= 4.5) & (g.edges < 9)] == 1).all()
    assert (g.levels[g.edges >= 9] == 2).all() and int(g.levels.max()) == 2


@pytest.mark.parametrize("shape", [(3, 40, 52), (1, 28, 28), (3, 64, 33)])
def test_scale_space_reconstructs_random_images_exactly(shape):
    x = random_image(*shape)
    space = decompose(x, sigma_grid(shape[1:]))
    assert len({tuple(t.shape[-2:]) for t in space.layers}) > 1 or min(shape[1:]) < 40  # nonuniform grid used
    assert (reconstruct(space) - x).abs().max() < 1e-5


def test_scale_space_reconstructs_a_photo_exactly(photo):
    space = decompose(photo, sigma_grid(photo.shape[1:]))
    assert [tuple(t.shape[-2:]) for t in space.layers][-1] == (28, 28)  # coarsest layers at 1/4 resolution
    assert (reconstruct(space) - photo).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("cells", ["smooth", "partition"])
def test_decoder_all_ones_is_the_image(cells, photo, photo_decoder):
    for x in (photo, random_image(1, 28, 28, seed=3)):
        dec = photo_decoder if x is photo and cells == "smooth" else sift_decompose(x, cells=cells)
        assert dec.n_features >= 1
        out = dec.decode(torch.ones(dec.n_features, dtype=torch.float64))
        assert out.shape == x.shape
        assert (out - x).abs().max() < 1e-5


def test_decoder_is_linear_with_zero_baseline(photo, photo_decoder):
    dec = photo_decoder
    k = dec.n_features
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(k, generator=g, dtype=torch.float64), torch.randn(k, generator=g, dtype=torch.float64)
    lhs = dec.decode(2.0 * a - 0.5 * b)
    rhs = 2.0 * dec.decode(a) - 0.5 * dec.decode(b)
    assert (lhs - rhs).abs().max() < 1e-10
    assert dec.decode(torch.zeros(k, dtype=torch.float64)).abs().max() == 0  # implicit baseline (Sec. 4.3.1)
    batch = dec.decode(torch.stack([a, b]))  # batched == one by one
    assert torch.allclose(batch[1], dec.decode(b), atol=1e-12)
    # differentiable: the gradient of <v, D(theta)> is D^T v
    theta = a.clone().requires_grad_(True)
    v = torch.randn(photo.shape, generator=g, dtype=torch.float64)
    (dec.decode(theta) * v).sum().backward()
    e3 = torch.zeros(k, dtype=torch.float64)
    e3[3] = 1
    assert torch.allclose(theta.grad[3], (dec.decode(e3) * v).sum(), rtol=1e-9)
    # sparse: far fewer stored entries than a dense (K, C H W) matrix
    assert dec.nnz() < 0.25 * k * photo.numel()


def test_partition_cells_partition_the_image_and_smooth_cells_sum_to_one():
    labels = torch.randint(0, 7, (1, 1, 6, 5), generator=torch.Generator().manual_seed(0)).float()
    labels = torch.nn.functional.interpolate(labels, size=(30, 25), mode="nearest")[0, 0].long()
    rows, pix, vals = sparse_cells(labels, None, 0.0, torch.float64)
    assert torch.equal(torch.sort(pix).values, torch.arange(30 * 25))  # every pixel exactly once ...
    assert torch.equal(rows[torch.argsort(pix)], labels.flatten()) and (vals == 1).all()  # ... in its own cell
    for sparsity in (0.0, 0.05, 0.3):
        rows, pix, vals = sparse_cells(labels, 2.0, sparsity, torch.float64)
        total = torch.zeros(30 * 25, dtype=torch.float64).index_add_(0, pix, vals)
        assert (vals > 0).all() and torch.allclose(total, torch.ones_like(total), atol=1e-12)  # Lemma 10
        if sparsity == 0.3:
            assert vals.numel() < dense_entries  # sparsification removed entries
        else:
            dense_entries = vals.numel()
    # each voxel's largest share stays with a nearby cell: smoothing is local
    rows, pix, vals = sparse_cells(labels, 1.0, 0.05, torch.float64)
    best = torch.zeros(30 * 25, dtype=torch.float64).scatter_reduce(0, pix, vals, "amax")
    own = vals[rows == labels.flatten()[pix]]
    assert best.min() > 0.2 and own.numel() == 30 * 25


def test_heatmap_of_ones_is_one_and_bad_theta_raises(photo, photo_decoder):
    dec = photo_decoder
    h = dec.heatmap(torch.ones(dec.n_features))
    assert h.shape == photo.shape[1:] and torch.allclose(h, torch.ones_like(h), atol=1e-9)
    with pytest.raises(ValueError, match="theta must have shape"):
        dec.decode(torch.ones(dec.n_features + 1))
    with pytest.raises(TypeError, match="theta must be a tensor"):
        dec.decode([1.0] * dec.n_features)
    with pytest.raises(ValueError, match="cells must be one of"):
        sift_decompose(photo, cells="hexagons")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        sift_decompose(photo[None])


def test_feature_weights_are_the_l2_norms_of_single_features(photo_decoder):
    dec = photo_decoder
    w = dec.feature_weights(chunk=64)
    e = torch.zeros(dec.n_features, dtype=torch.float64)
    e[5] = 1
    assert w.shape == (dec.n_features,) and torch.isclose(w[5], dec.decode(e).norm())


# ---------------------------------------------------------------------------------------------- keypoints
def test_keypoints_are_equivariant_to_whole_pixel_translation():
    canvas = torch.full((1, 96, 96), 0.5, dtype=torch.float64)
    pattern = torch.nn.functional.interpolate(random_image(1, 12, 12, seed=5)[None], size=(40, 40), mode="bicubic",
                                              align_corners=False)[0].clamp(0, 1)
    a, b = canvas.clone(), canvas.clone()
    a[:, 20:60, 20:60] = pattern
    b[:, 23:63, 25:65] = pattern
    grid = sigma_grid((96, 96), sigma_max=8.0)
    ka, kb = detect_keypoints(a, grid), detect_keypoints(b, grid)
    assert len(ka) > 20
    moved = ka.position + torch.tensor([3.0, 5.0], dtype=torch.float64)
    d = torch.cdist(torch.cat([moved, ka.sigma[:, None]], 1), torch.cat([kb.position, kb.sigma[:, None]], 1))
    matched = (d.min(1).values < 1e-6).float().mean()
    assert matched >= 0.9, f"only {matched:.2f} of the keypoints moved with the image"
    assert abs(len(ka) - len(kb)) <= 0.1 * len(ka)


def test_keypoints_are_stable_under_small_noise_and_deterministic(photo):
    grid = sigma_grid(photo.shape[1:])
    k0 = detect_keypoints(photo, grid)
    assert torch.equal(k0.as_tensor(), detect_keypoints(photo, grid).as_tensor())
    noisy = photo + 0.003 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k1 = detect_keypoints(noisy, grid)
    near = torch.cdist(k0.position, k1.position) < 1.0
    same_scale = (k0.sigma[:, None].log2() - k1.sigma[None].log2()).abs() < 1 / 3
    overlap = float((near & same_scale).any(1).float().mean())
    assert len(k0) > 30 and overlap >= 0.7, f"keypoint overlap under noise {overlap:.2f}"
    # keypoints are refined off the pixel centres (Remark 19) and carry a positive scale
    assert (k0.position - k0.position.round()).abs().max() > 0.05 and (k0.sigma > 0).all()


# ---------------------------------------------------------------------------------------------- metric
def test_weighted_ascent_reduces_to_the_pixel_step_and_keeps_weighted_masses():
    from pathxai.methods.ablation_path import AscentConfig, ascent_step
    from pathxai.methods.ablation_path.paths import affine_path
    from pathxai.methods.sift_ablation import weighted_ascent_step, weighted_masses

    g = torch.Generator().manual_seed(0)
    state = affine_path(5, (1, 9)).expand(2, 1, 5, 1, 9).clone()
    grad = torch.randn(state.shape, generator=g, dtype=torch.float64)
    cfg = AscentConfig(step_size=0.5, smoothing_sigma=0.0, saturation=0.8)
    same = weighted_ascent_step(state, grad, torch.ones(9, dtype=torch.float64), cfg)
    assert torch.allclose(same, ascent_step(state, grad, cfg), atol=1e-12)
    w = torch.rand(9, generator=g, dtype=torch.float64) + 0.2
    out = weighted_ascent_step(state, grad, w, cfg)
    assert torch.allclose(weighted_masses(out, w), torch.arange(1, 6, dtype=torch.float64) / 6, atol=1e-9)
    assert (out.diff(dim=2) >= -1e-12).all() and not torch.allclose(out, same)


# ---------------------------------------------------------------------------------------------- methods
def test_sift_path_improves_on_its_affine_start_on_digits(digits_model, digit_batch):
    x, y = digit_batch
    m = SiftAblationPath(digits_model, n_steps=6, min_iterations=4, max_iterations=6, batch_size=16)
    e = m.explain(x[:2], y[:2])
    hist = e.extras["score_history"]
    final = hist.gather(1, e.extras["iterations"].view(-1, 1))[:, 0]
    assert (final >= hist[:, 0] - 1e-9).all(), f"start {hist[:, 0]} final {final}"
    assert (final > hist[:, 0] + 1e-3).any()
    for path, k in zip(e.extras["path"], e.extras["n_features"].tolist()):
        assert path.shape == (6, k)
        assert (path.diff(dim=0) >= -1e-9).all() and path.min() >= 0 and path.max() <= 1  # monotone, in [0, 1]
        assert torch.allclose(path.mean(1), torch.arange(1, 7, dtype=torch.float64) / 7, atol=1e-6)  # constant speed
    assert e.attribution.shape == (2, 1, 28, 28)


def test_sift_path_with_feature_weights_improves_on_digits(digits_model, digit_batch):
    x, y = digit_batch
    m = SiftAblationPath(digits_model, n_steps=6, min_iterations=4, max_iterations=4, feature_weights=True,
                         batch_size=16)
    e = m.explain(x[:1], y[:1])
    hist = e.extras["score_history"][0]
    assert hist[-1] >= hist[0] - 1e-9 and e.meta["params"]["feature_weights"] is True


def test_sift_views(digit_batch):
    x, _ = digit_batch
    dec = sift_decompose(x[0])
    phi = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None].expand(4, dec.n_features)
    strip = path_strip(dec, phi, gap=2)
    assert strip.shape == (1, 28, 4 * 28 + 3 * 2)
    assert torch.allclose(strip[:, :, :28].double(), x[0].double().clamp(0, 1), atol=1e-5)  # phi = 0: the image
    assert strip[:, :, -28:].abs().max() < 1e-6  # phi = 1: D(0) = 0
    import matplotlib
    matplotlib.use("Agg")
    ax = draw_keypoints(x[0], dec.keypoints.as_tensor(), top=3)
    assert len(ax.patches) == min(3, dec.n_features)


def test_sift_rise_matches_its_expectation_on_a_linear_model():
    """For f(x) = <w, x>, E[f(D(theta)) theta_i] / p = (1 - p) a_i + p sum_j a_j with a_j = f(D(e_j))."""
    x = torch.nn.functional.interpolate(random_image(1, 6, 6, seed=2)[None], size=(24, 24), mode="bicubic",
                                        align_corners=False).float()  # smooth: white noise has few scale extrema
    wvec = torch.randn(1, 24, 24, generator=torch.Generator().manual_seed(4))
    model = lambda z: torch.stack([(z * wvec).flatten(1).sum(1), -(z * wvec).flatten(1).sum(1)], 1)  # noqa: E731
    m = SiftRISE(model, n_masks=3000, batch_size=500, score="output", seed=0)
    e = m.explain(x, 0)
    dec = m.decompose(x[0])
    assert dec.n_features >= 4
    a = torch.stack([(dec.decode(row) * wvec).sum() for row in torch.eye(dec.n_features)]).double()
    expected = (1 - m.p) * a + m.p * a.sum()
    got = e.extras["feature_importance"][0]
    assert torch.corrcoef(torch.stack([got, expected]))[0, 1] > 0.9
    assert e.attribution.shape == (1, 1, 24, 24)


def test_bad_parameters_raise(digits_model):
    with pytest.raises(ValueError, match="cells"):
        SiftAblationPath(digits_model, cells="nope")
    with pytest.raises(ValueError, match="heatmap"):
        SiftRISE(digits_model, heatmap="nope")
    with pytest.raises(ValueError, match="eta"):
        SiftRISE(digits_model, eta=0)


# ---------------------------------------------------------------------------------------------- SIFT-RELAX
BOX = (6, 32, 6, 32)  # rows y0:y1, columns x0:x1 the box encoder sees


def blob_image(size: int = 64) -> torch.Tensor:
    """(1, 1, size, size) float32: seven Gaussian blobs on a grey canvas, two of them inside BOX."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    img = torch.full((size, size), 0.1, dtype=torch.float64)
    for cy, cx, s, a in [(14, 14, 3.0, 0.8), (24, 22, 2.5, 0.6), (12, 48, 3.0, 0.7), (46, 16, 2.5, 0.9),
                         (48, 46, 3.5, 0.6), (34, 52, 2.0, 0.8), (52, 32, 2.0, 0.7)]:
        img += a * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return img[None, None].float()


class BoxEncoder(torch.nn.Module):
    """A representation that only sees BOX: everything outside it is ignored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = BOX
        return x[:, :, y0:y1, x0:x1].flatten(1)


class SmallEncoder(torch.nn.Module):
    """A fixed random conv + ReLU + pooling encoder: nonlinear, so RELAX's similarity is not linear in the gains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_sift_relax_ranks_the_keypoints_an_encoder_sees_above_those_it_ignores():
    x = blob_image()
    m = SiftRELAX(BoxEncoder(), n_masks=256, batch_size=64, seed=0)
    e = m.explain(x)
    imp, kp = e.extras["feature_importance"][0], e.extras["keypoints"][0]
    inside = (kp[:, 0] >= BOX[0]) & (kp[:, 0] < BOX[1]) & (kp[:, 1] >= BOX[2]) & (kp[:, 1] < BOX[3])
    assert 3 <= int(inside.sum()) < len(kp) - 3
    top = torch.argsort(imp, descending=True)[:3]
    assert inside[top].all(), f"top keypoints {top.tolist()} not all inside the box"
    margin = float(imp[inside].mean() - imp[~inside].mean())
    assert margin > 0.01, f"inside - outside mean importance {margin:.4f}"  # measured 0.013-0.020 over seeds
    # keypoints whose features do not reach the box cannot change the representation: their importance is
    # p * E[s], the level every keypoint would have under a blind encoder
    dec = m.decompose(x[0])
    reach = torch.stack([dec.decode(row)[:, BOX[0]:BOX[1], BOX[2]:BOX[3]].norm()
                         for row in torch.eye(dec.n_features, dtype=torch.float64)])
    blind = reach < 1e-2 * reach.max()
    assert blind.sum() >= 5
    assert (imp[blind] - m.p * e.extras["mean_similarity"][0]).abs().max() < 0.02
    # the pixel maps carry it over: more heat inside the box, Eq. 4.48's maximum inside it
    heat = e.saliency()[0]
    box = torch.zeros_like(heat, dtype=torch.bool)
    box[BOX[0]:BOX[1], BOX[2]:BOX[3]] = True
    assert heat[box].mean() > heat[~box].mean()
    image_heat = SiftRELAX(BoxEncoder(), n_masks=256, batch_size=64, seed=0, heatmap="image").explain(x).saliency()[0]
    assert box.flatten()[int(image_heat.argmax())]


@pytest.mark.parametrize("estimator,sampling", [("mean", "iid"), ("weighted", "stratified"), ("mean", "antithetic")])
def test_sift_relax_equals_a_brute_force_loop_over_the_same_gains(estimator, sampling):
    x = blob_image(32)
    enc = SmallEncoder()
    m = SiftRELAX(enc, n_masks=100, batch_size=7, estimator=estimator, sampling=sampling, control_variate=False,
                  seed=5)
    e = m.explain(x)
    dec = m.decompose(x[0])
    k, n = dec.n_features, m.n_masks
    assert k >= 4 and n >= 100
    with torch.no_grad():
        h = enc(x).double()
        sims, gains = [], []
        for j in range(n):  # one gain vector at a time, in no particular batching
            g = m.gains(torch.tensor([j]), k)[0].double()
            assert set(g.unique().tolist()) <= {0.0, 1.0}
            h_j = enc(dec.decode(g).float()[None]).double()
            sims.append(torch.nn.functional.cosine_similarity(h, h_j, dim=1, eps=1e-12)[0])
            gains.append(g)
    s, g = torch.stack(sims), torch.stack(gains)       # (N,), (N, K)
    kept = g.sum(0)
    weighted_mean = (s[:, None] * g).sum(0) / kept     # Eq. 12
    spread = (g * (s[:, None] - weighted_mean) ** 2).sum(0)
    if estimator == "mean":
        importance, uncertainty = (s[:, None] * g).sum(0) / n, spread / n   # Eq. 2, Eq. 9 centred as RELAX does
    else:
        importance, uncertainty = weighted_mean, spread / kept                # Eq. 12-13
    assert torch.allclose(e.extras["feature_importance"][0], importance, rtol=1e-6, atol=1e-8)
    assert torch.allclose(e.extras["feature_uncertainty"][0], uncertainty, rtol=1e-5, atol=1e-9)
    assert abs(float(e.extras["mean_similarity"][0]) - float(s.mean())) < 1e-6
    eps = torch.median(uncertainty)
    filtered = torch.where(uncertainty < eps, importance, torch.zeros_like(importance))   # U-RELAX, Eq. 10
    assert torch.allclose(e.extras["u_relax_feature_importance"][0], filtered, rtol=1e-6, atol=1e-8)
    # the pixel map is the homogeneous-field extraction of the keypoint importance (Eq. 4.46)
    assert torch.allclose(e.attribution[0, 0].double(), dec.heatmap(importance.float()).double(), atol=1e-6)


def test_sift_relax_control_variate_is_exact_for_a_linear_similarity():
    """s(theta) = <h, W D(theta)> is linear in the gains, so the cross-fitted regression removes all the noise and
    the estimate is E[s theta_i] = p a_i + p^2 sum_{j != i} a_j with a_j = <h, W D(e_j)>."""
    x = blob_image(64)
    w = torch.randn(5, 64 * 64, generator=torch.Generator().manual_seed(1))

    def linear(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ w.t()

    kwargs = dict(n_masks=256, batch_size=64, similarity="dot", seed=2)
    with_cv = SiftRELAX(linear, control_variate=True, **kwargs)
    plain = SiftRELAX(linear, control_variate=False, **kwargs)
    dec = with_cv.decompose(x[0])
    h = linear(x).double()[0]
    a = torch.stack([(h * linear(dec.decode(row).float()[None]).double()[0]).sum()
                     for row in torch.eye(dec.n_features, dtype=torch.float64)])
    assert dec.n_features >= 10
    p = with_cv.p
    exact = p * a + p * p * (a.sum() - a)
    got = with_cv.explain(x).extras["feature_importance"][0]
    err_cv = float((got - exact).abs().max())
    err_plain = float((plain.explain(x).extras["feature_importance"][0] - exact).abs().max())
    assert err_cv < 1e-4 * float(exact.abs().max()), err_cv
    assert err_cv < 0.01 * err_plain, (err_cv, err_plain)


def test_sift_relax_with_all_gains_on_or_a_blind_encoder_is_uniform():
    x = blob_image(32)

    class AllOn(SiftRELAX):
        def gains(self, index: torch.Tensor, k: int) -> torch.Tensor:
            return torch.ones(index.numel(), k)

    # (no control variate: its correction adds back the expectation under Bernoulli(p) gains, not these)
    e = AllOn(SmallEncoder(), n_masks=40, batch_size=16, control_variate=False).explain(x)
    imp = e.extras["feature_importance"][0]
    assert len(imp) >= 4
    assert torch.allclose(imp, torch.ones_like(imp), atol=1e-6)    # D(1) = x: every similarity is 1
    assert float(imp.max() - imp.min()) < 1e-12 and float(e.extras["feature_uncertainty"][0].max()) < 1e-12
    heat = e.saliency()[0]
    assert float(heat.max() - heat.min()) < 1e-5                  # I(c 1) = c everywhere
    # an encoder that ignores its input: with random gains too, every keypoint gets the same weighted importance
    blind = SiftRELAX(lambda z: torch.ones(z.shape[0], 3), n_masks=64, batch_size=16, estimator="weighted")
    e = blind.explain(x)
    assert torch.allclose(e.extras["feature_importance"][0], torch.ones(len(imp), dtype=torch.float64))
    assert float(e.extras["feature_uncertainty"][0].abs().max()) == 0.0


def test_sift_relax_parameters():
    enc = BoxEncoder()
    m = SiftRELAX(enc, tolerance=0.05, delta=0.05, sampling="iid")
    assert m.n_masks == masks_needed(0.05, 0.05)
    assert SiftRELAX(enc, n_masks=100).n_masks == 104   # whole strata of 8
    assert "grid" not in m.params() and "baseline" not in m.params() and m.params()["eta"] == 4.0
    with pytest.raises(TypeError, match="grid"):
        SiftRELAX(enc, grid=7)
    with pytest.raises(ValueError, match="n_masks.*tolerance"):
        SiftRELAX(enc, n_masks=10, tolerance=0.1)
    with pytest.raises(ValueError, match="aggregation"):
        SiftRELAX(enc, aggregation="max")
    with pytest.raises(ValueError, match="estimator"):
        SiftRELAX(enc, estimator="median")
    with pytest.raises(ValueError, match="heatmap"):
        SiftRELAX(enc, heatmap="nope")
    assert px.get_method("sift_relax") is SiftRELAX and not SiftRELAX.needs_target


@pytest.mark.slow
def test_sift_path_improves_on_its_affine_start_on_efficientnet(efficientnet):
    x = efficientnet.preprocess(px.data.sample_images()[0].image)
    m = SiftAblationPath(efficientnet, n_steps=8, min_iterations=3, max_iterations=4, max_keypoints=150,
                         batch_size=8)
    e = m.explain(x, None)
    hist = e.extras["score_history"][0]
    final = hist[int(e.extras["iterations"][0])]
    assert final >= hist[0], f"affine start {hist[0]:.4f}, optimised {final:.4f}"
    # the decomposition must not dominate the explanation (goal: < 20 %)
    assert e.extras["decomposition_time_s"][0] < 0.5 * e.extras["path_time_s"][0]


def test_sift_rise_heatmap_error_is_the_relative_error_of_the_explicit_heatmap(photo_decoder):
    from pathxai.core.sampling import relative_error
    from pathxai.methods.sift_ablation.method import SiftRISE

    dec = photo_decoder
    k = dec.n_features
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(k, generator=gen, dtype=torch.float64)
    root = 0.05 * torch.randn(k, k, generator=gen, dtype=torch.float64)
    cov = root @ root.t()
    h = dec.heatmap(torch.eye(k, dtype=dec.matrices[0].dtype)).flatten(1).double().t()   # (P, K), explicit
    heat = h @ theta
    se = ((h @ cov) * h).sum(1).sqrt()                                                   # diag(H C H^T)^1/2
    want = relative_error(heat[None], se[None])
    got = SiftRISE.heatmap_error(theta, cov, SiftRISE.heatmap_moments(dec))
    assert torch.allclose(got, want, rtol=1e-4), (got, want)
    # and it is what sift_rise reports for its Voronoi heatmap
    assert torch.allclose(dec.heatmap(theta.float()).flatten().double(), heat, rtol=1e-4, atol=1e-6)
