"""A model trained once per session on a simulated world (support/trained.py), for the recovery tests."""

from __future__ import annotations

import pytest

from support.trained import Trained, train_world


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_world(tmp_path_factory)
