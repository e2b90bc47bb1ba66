"""A simulated payment history and a model trained on it, shared by the recovery model tests
(training takes a few seconds; every test that needs a model reuses this one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from billops.recovery.model import RecoveryModel
from billops.recovery.training import train
from billops.sim.business import add_months
from billops.sim.payers import World

END = datetime(2026, 11, 1, tzinfo=UTC)
SPLIT = END - timedelta(days=30)
SEED, CUSTOMERS, MONTHS = 11, 15000, 12


@dataclass
class Trained:
    world: World
    history: pd.DataFrame  # attempts before SPLIT (the training data)
    failures: pd.DataFrame  # failed renewals after SPLIT
    model: RecoveryModel
    path: Path


def train_world(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    world = World(seed=SEED, customers=CUSTOMERS, start=add_months(END, -MONTHS), end=END)
    history = world.history(until=SPLIT)
    path = tmp_path_factory.mktemp("model") / "recovery-model"
    model, _ = train(history, out=path, source="test world")
    return Trained(world, history, world.failures(SPLIT, END), model, path)
