"""Fixtures of the deployment tests. Their helpers are in deploy_support.py, importable from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # deploy_support, beside this file

from helpers import driftline  # noqa: E402


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local registry with housing version 1 trained and promoted to production."""
    root = tmp_path_factory.mktemp("deploy") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "1500", "--seed", "1",
              "--param", "n_estimators=20")
    driftline("promote", "housing", "1", "--registry", str(root))
    return root
