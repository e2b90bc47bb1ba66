"""Writing a payer world's attempts and failures to files, and `billops recovery simulate`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from billops.sim.business import add_months
from billops.sim.world_params import WorldParams


def _iso(series: pd.Series) -> pd.Series:
    """ISO 8601 UTC with a Z, whole seconds (fast: numpy, not strftime)."""
    values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    return pd.Series(
        np.char.add(np.datetime_as_string(values, unit="s"), "Z"), index=series.index, dtype="str"
    )


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_attempts_csv(df: pd.DataFrame, path: Path) -> None:
    """Write an attempts frame as CSV with ISO 8601 UTC timestamps (read back with dtype=str,
    keep_default_na=False)."""
    out = df.copy()
    for col in ("attempted_at", "customer_created_at"):
        out[col] = _iso(out[col])
    _atomic_write(path, lambda fh: out.to_csv(fh, index=False))


def write_failures_jsonl(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in ("failed_at", "customer_created_at", "deadline"):
        out[col] = _iso(out[col])
    records = out.to_dict(orient="records")

    def write(fh: Any) -> None:
        for r in records:
            fh.write(json.dumps({k: (int(v) if isinstance(v, np.integer) else v) for k, v in r.items()}))
            fh.write("\n")

    _atomic_write(path, write)


def simulate_to_dir(
    out: Path,
    *,
    customers: int,
    months: int,
    seed: int,
    split_days: int,
    end: datetime,
    params: WorldParams | None = None,
) -> dict[str, Any]:
    """Generate a world and write attempts.csv (before the split), test_attempts.csv (at or after the
    split) and failures.jsonl (failures after the split) into `out`."""
    from billops.sim.payers import World

    end = (end if end.tzinfo else end.replace(tzinfo=UTC)).astimezone(UTC)
    start = add_months(end, -months)
    split = end - timedelta(days=split_days)
    if not start < split < end:
        raise ValueError("the split must fall inside the simulated period (split_days < the period)")
    world = World(seed=seed, customers=customers, start=start, end=end, params=params)
    everything = world.history()
    n_train = int(everything["attempted_at"].searchsorted(pd.Timestamp(split), side="left"))
    train, test = everything.iloc[:n_train], everything.iloc[n_train:]
    failures = world.failures(split, end)
    write_attempts_csv(train, out / "attempts.csv")
    write_attempts_csv(test, out / "test_attempts.csv")
    write_failures_jsonl(failures, out / "failures.jsonl")
    return {
        "start": start,
        "split": split,
        "end": end,
        "train_attempts": len(train),
        "test_attempts": len(test),
        "failures": len(failures),
    }


def parse_end(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"--end: not an ISO date/time: {value!r}") from exc
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def register(recovery_app: typer.Typer) -> None:
    """Add `simulate` to the `billops recovery` command group."""

    @recovery_app.command("simulate")
    def simulate(
        out: Annotated[Path, typer.Option("--out", help="Output directory.")],
        customers: Annotated[int, typer.Option(min=1, max=1_000_000, help="Customers to simulate.")] = 20000,
        months: Annotated[int, typer.Option(min=1, max=60, help="Months of billing, ending at --end.")] = 12,
        seed: Annotated[int, typer.Option(help="Random seed: the same arguments give the same data.")] = 7,
        split_days: Annotated[
            int, typer.Option(min=1, help="Days before --end where training data stops and the test begins.")
        ] = 30,
        end: Annotated[
            str | None, typer.Option(help="End of the simulated period, ISO date (default: today 00:00 UTC).")
        ] = None,
    ) -> None:
        """Simulate a payer world with an exploratory retry history: writes attempts.csv (training, before
        the split), test_attempts.csv (at or after the split) and failures.jsonl (failures after the split).
        The data is synthetic; its rules are invented (docs/simulator.md)."""
        try:
            summary = simulate_to_dir(
                out, customers=customers, months=months, seed=seed, split_days=split_days, end=parse_end(end)
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        typer.echo(
            f"simulated {customers} customers {summary['start']:%Y-%m-%d}..{summary['end']:%Y-%m-%d}: "
            f"{summary['train_attempts']} training attempts before {summary['split']:%Y-%m-%d}, "
            f"{summary['test_attempts']} test attempts, {summary['failures']} failures after the split; "
            f"wrote {out}"
        )
