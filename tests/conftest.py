"""Shared fixtures and helpers for the test-suite."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"

warnings.filterwarnings("ignore", message=".*Unwrapped parameters.*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    # the CI machine has 2 cores and pytest runs 2 xdist workers: one thread each avoids oversubscription
    default = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
    torch.set_num_threads(int(os.environ.get("RARTSPRUNE_TEST_THREADS", default)))


def cifar_root() -> Path:
    """The shared CIFAR-10 ImageFolder tree, or skip the test."""
    path = DATA / "cifar10"
    if not (path / "train").is_dir():
        pytest.skip(f"CIFAR-10 ImageFolder tree not found at {path} (see ../shared/data/README.md)")
    return path


def nats_table() -> Path:
    """The NATS-Bench accuracy table, or skip the test."""
    path = DATA / "nats-bench" / "tss_test_accuracy_200ep.csv"
    if not path.is_file():
        pytest.skip(f"NATS-Bench table not found at {path} (see ../shared/data/README.md)")
    return path
