"""Shared fixtures: the digits CNN (trained once, cached) and a few digit images."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("PATHXAI_NO_DISK_CACHE", "1")  # tests must not depend on chunk sizes cached by earlier runs

import pathxai as px  # noqa: E402


@pytest.fixture(scope="session")
def digits_model() -> torch.nn.Module:
    return px.models.load("digits-cnn")


@pytest.fixture(scope="session")
def digit_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = px.data.digits("test")
    return x[:3].clone(), y[:3].clone()


@pytest.fixture(scope="session")
def efficientnet() -> torch.nn.Module:
    return px.models.load("efficientnet-lite0")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: on a busy 2-core machine two OpenMP threads make tiny
    models ~30x slower than one. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
