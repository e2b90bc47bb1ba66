"""The learned recovery model: P(a retry at time t succeeds | the failure, the card, the history, t).

One LightGBM binary classifier over *retry* attempts, calibrated with isotonic regression on a later,
held-out slice of time, evaluated on the latest slice. Features are computed only from what was known
before the attempt (see `FEATURES`): the customer's history is taken as of the invoice's first failure,
never after it, and the candidate time enters only through its own calendar position in the customer's
local time. The same feature code serves training rows and planning candidates, so the two cannot drift.

Training examples are the retries of invoices whose first attempt failed, up to and including the first
success, whatever the decline (expired cards and other "needs new card data" codes included: card
account updaters refresh many cards in place, so whether a retry at t recovers is a question for the
data, not a rule). A retry on the same card with a new expiry is such an in-place refresh and is kept.
A payment with another card (another brand, funding or country than the attempt that failed) is new
card data the customer supplied, not a retry a planner could choose: it is left out.

The artifact is a directory: `model.txt` (LightGBM), `calibration.json` (isotonic knots) and
`manifest.json` (format, version, features and category vocabularies, training window, metrics,
library versions, file digests). The version is `recovery-lgbm-<12 hex>` of the content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billops.domain.declines import load_taxonomy
from billops.errors import ConfigError, InputError
from billops.recovery.retry_features import (
    CATEGORICAL,
    FEATURES,
    LABELS,
    NUMERIC,
    WEEKDAYS,
    CustomerHistory,
    StaticFeatures,
    assemble,
    build_vocab,
    encode,
    feature_matrix,
    local_fields,
    local_parts,
    static_features,
)

__all__ = [  # the features are defined in retry_features; the model's users find them here too
    "CATEGORICAL",
    "FEATURES",
    "LABELS",
    "NUMERIC",
    "WEEKDAYS",
    "CustomerHistory",
    "StaticFeatures",
    "assemble",
    "build_vocab",
    "encode",
    "feature_matrix",
    "local_fields",
    "local_parts",
    "static_features",
]


FORMAT = "billops-recovery-model/1"
# The sequence model's one extra input: the success probabilities the retry model gave the invoice's
# earlier retries, summed. Retries that failed at times the model liked are evidence that the invoice
# will not be paid (no funds at all, a closed account): later chances are lower than the retry model
# says, which averages over the history's own (often random) earlier retry times.
SEQUENCE_FEATURE = "prior_expected_successes"
# And the hours since the invoice's previous attempt: a retry soon after a failed one meets the same
# state (recovery/spacing.py).
GAP_FEATURE = "hours_since_previous_attempt"
FEATURES_SEQUENCE = [*FEATURES, SEQUENCE_FEATURE, GAP_FEATURE]
IDENTITY_KNOTS = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
MIN_EXAMPLES = 200  # fewer retries than this in the history: no model (the rules scorer stays in charge)

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.15,  # 0.08 gave AUC +0.002 for 2.3× the trees (and the planning time)
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "cat_smooth": 10,
    "verbose": -1,
    "seed": 17,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 200
_SCREENS_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- history


@lru_cache(maxsize=4096)
def _classify(code: str, mac: str, brand: str) -> tuple[str, bool, float]:
    d = load_taxonomy().classify(
        code or "generic_decline", network_advice_code=mac or None, network=brand or None
    )
    never = d.never_retry or d.category.value == "hard"
    return d.category.value, never, float(d.retry_after_hours or 0.0)


def categories(codes: pd.Series, macs: pd.Series, brands: pd.Series) -> pd.DataFrame:
    """Taxonomy category, never-retry flag and network wait (hours) for each (code, MAC, brand)."""
    keys = pd.DataFrame({"c": codes.to_numpy(), "m": macs.to_numpy(), "b": brands.to_numpy()})
    uniq = keys.drop_duplicates()
    rows = [_classify(str(c), str(m), str(b)) for c, m, b in uniq.itertuples(index=False)]
    table = uniq.assign(
        decline_category=[r[0] for r in rows],
        never_retry=[r[1] for r in rows],
        wait_hours=[r[2] for r in rows],
    )
    out = keys.merge(table, on=["c", "m", "b"], how="left")
    out.index = codes.index
    return out[["decline_category", "never_retry", "wait_hours"]]


# ---------------------------------------------------------------------------------------------- examples


def training_examples(attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per retry of an invoice whose first attempt failed, with its label and its context.
    `attrs["new_card_retries_excluded"]` counts the payments left out because they used new card data."""
    a = attempts.sort_values(["invoice_id", "attempted_at"], kind="stable").reset_index(drop=True)
    grp = a.groupby("invoice_id", sort=False)
    idx = grp.cumcount()
    succ = (a["outcome"] == "succeeded").astype(np.int64)
    wins_before = succ.groupby(a["invoice_id"]).cumsum() - succ
    first_failed = grp["outcome"].transform("first") == "failed"
    first_at = grp["attempted_at"].transform("first")
    # Another card is new card data the customer supplied: by its fingerprint where the history has one
    # (the optional ATTEMPTS column `card_fingerprint`), else by another brand, funding or country. A
    # new expiry on the same card is an account updater's in-place refresh, which a scheduled retry
    # benefits from: kept.
    card_key = a["card_brand"].astype(str) + "|" + a["card_funding"].astype(str)
    card_key = card_key + "|" + a["card_country"].astype(str)
    if "card_fingerprint" in a.columns:
        fp = a["card_fingerprint"].fillna("").astype(str)
        card_key = card_key.where(fp == "", "fp:" + fp)
    exp_key = (
        pd.to_numeric(a["card_exp_month"], errors="coerce").astype("Int64").astype(str)
        + "|"
        + pd.to_numeric(a["card_exp_year"], errors="coerce").astype("Int64").astype(str)
    )
    a = a.assign(_card=card_key, _exp=exp_key)
    grp = a.groupby("invoice_id", sort=False)
    prev = grp[["decline_code", "network_advice_code", "_card", "_exp", "attempted_at"]].shift(1)
    same_card = (a["_card"] == prev["_card"]).to_numpy()
    refreshed = same_card & (a["_exp"] != prev["_exp"]).to_numpy()
    retry = (idx > 0) & first_failed & (wins_before == 0)
    keep = retry & same_card
    ex = a[keep].copy()
    ex["first_failed_at"] = first_at[keep]
    # The card as it was when the invoice first failed: a planner knows nothing later (an updater's
    # new expiry on the paying retry would otherwise give the answer away).
    for c in ("card_exp_month", "card_exp_year"):
        ex[c] = grp[c].transform("first")[keep]
    ex["at"] = ex["attempted_at"]
    ex["attempt_number"] = idx[keep] + 1
    ex["decline_code"] = prev.loc[keep, "decline_code"].fillna("").replace("", "generic_decline")
    ex["network_advice_code"] = prev.loc[keep, "network_advice_code"].fillna("")
    # Hours since the invoice's previous attempt (the failure a retry follows): the spacing's evidence.
    ex["gap_hours"] = (ex["attempted_at"] - prev.loc[keep, "attempted_at"]).dt.total_seconds() / 3600.0
    ex["label"] = (ex["outcome"] == "succeeded").astype(np.int64)
    ex = ex.reset_index(drop=True)
    ex.attrs["new_card_retries_excluded"] = int((retry & ~same_card).sum())
    ex.attrs["refreshed_card_retries"] = int((retry & refreshed).sum())
    return ex


def prepare(rows: pd.DataFrame, history: CustomerHistory) -> pd.DataFrame:
    """Add the decline category and the customer's history as of the first failure."""
    cats = categories(rows["decline_code"], rows["network_advice_code"], rows["card_brand"])
    rows = rows.assign(decline_category=cats["decline_category"].to_numpy())
    agg = history.as_of(rows["customer_id"], rows["first_failed_at"])
    for col in agg.columns:
        rows[col] = agg[col].to_numpy()
    return rows


# ---------------------------------------------------------------------------------------------- artifact


@dataclass
class RecoveryModel:
    path: Path
    manifest: dict[str, Any]
    booster: Any  # lightgbm.Booster
    knots_x: np.ndarray
    knots_y: np.ndarray
    plan_x: np.ndarray
    plan_y: np.ndarray
    attempt_thresholds: np.ndarray  # the model's split points on attempt_number

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def vocab(self) -> dict[str, list[str]]:
        return dict(self.manifest["vocab"])

    threads: int = 0  # LightGBM threads per prediction (0: all cores); 1 when callers run in parallel
    # The optimizer's-curse correction: a chosen plan's raw 1 − Π(1 − p) → what an independent model
    # says of the same times (identity when training could not measure it).
    curse_x: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    curse_y: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    # The sequence model (FEATURES_SEQUENCE) and its isotonic knots; None in older artifacts.
    sequence_booster: Any = None
    seq_x: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    seq_y: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))
    # Boosters of the first n trees (`screen`), built on first use; `dataclasses.replace` shares them.
    screens: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    def predict_sequence(self, x: np.ndarray, evidence: np.ndarray, gap_hours: np.ndarray) -> np.ndarray:
        """Calibrated P(success) of retries given the earlier retries' summed probabilities
        (`SEQUENCE_FEATURE`) and the hours since the previous attempt (`GAP_FEATURE`, unused by older
        artifacts); the retry model's own when the artifact has no sequence model."""
        if len(x) == 0:
            return np.zeros(0)
        if self.sequence_booster is None:
            return self.predict(x)
        extra = [evidence, gap_hours][: int(self.sequence_booster.num_feature()) - x.shape[1]]
        x2 = np.column_stack([x, *extra])
        raw = np.asarray(self.sequence_booster.predict(x2, num_threads=self.threads), dtype=np.float64)
        return np.interp(raw, self.seq_x, self.seq_y)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)

    @property
    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def screen(self, x: np.ndarray, trees: int) -> np.ndarray:
        """The first `trees` trees' uncalibrated score in (0, 1): a cheap ranking of candidate times.
        They are a Booster of their own: threads may share a Booster only while they all predict with
        the same number of iterations (LightGBM issues #666, #6142), so the main one never gets
        `num_iteration`."""
        booster = self.screens.get(trees)
        if booster is None:
            import lightgbm

            with _SCREENS_LOCK:
                booster = self.screens.get(trees)
                if booster is None:
                    text = self.booster.model_to_string(num_iteration=trees)
                    booster = self.screens[trees] = lightgbm.Booster(model_str=text)
        return np.asarray(booster.predict(x, num_threads=self.threads), dtype=np.float64)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.knots_x, self.knots_y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of success, one per row of `x`."""
        if len(x) == 0:
            return np.zeros(0)
        return self.calibrate(self.raw(x))

    def plan_probability(self, retry_probabilities: list[float]) -> float:
        """P(the plan recovers the invoice): 1 − Π(1 − p_k) of the chosen retries' sequence-model
        probabilities, corrected for the optimizer's curse (then the older artifacts' invoice-level
        map, identity in new ones)."""
        if not retry_probabilities:
            return 0.0
        return float(self.plan_probabilities([retry_probabilities])[0])

    def plan_probabilities(self, plans: list[list[float]]) -> np.ndarray:
        """`plan_probability` of many plans at once (0 for a plan without retries)."""
        lengths = np.array([len(q) for q in plans], dtype=np.int64)
        out = np.zeros(len(plans))
        has = lengths > 0
        if not has.any():
            return out
        flat = 1.0 - np.array([v for q in plans for v in q], dtype=np.float64)
        heads = (np.cumsum(lengths) - lengths)[has]
        raw = 1.0 - np.multiply.reduceat(flat, heads)
        out[has] = np.interp(np.interp(raw, self.curse_x, self.curse_y), self.plan_x, self.plan_y)
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) per feature; the last column is the bias."""
        return np.asarray(
            self.booster.predict(x, pred_contrib=True, num_threads=self.threads), dtype=np.float64
        )

    def attempt_number_classes(self, values: np.ndarray) -> np.ndarray:
        """Map attempt numbers onto the smallest equal-prediction representative (the model's own
        split thresholds on the feature), so the planner predicts each distinct case once."""
        th = self.attempt_thresholds
        low = values.min() if len(values) else 0.0
        bins = np.searchsorted(th, values, side="left")
        return np.concatenate([[low], np.floor(th) + 1])[bins]


def _thresholds(booster: Any, feature: int) -> list[float]:
    found: set[float] = set()

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            if node["split_feature"] == feature:
                found.add(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return sorted(found)


def library_versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    from billops import __version__

    return {
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": _platform.python_version(),
        "billops": __version__,
    }


def load_model(path: Path) -> RecoveryModel:
    import lightgbm

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no manifest.json: not a BillOps recovery model directory") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path / 'manifest.json'}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: model format {manifest.get('format')!r}, this BillOps reads {FORMAT!r}")
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.exists() or _sha256(f) != digest:
            raise ConfigError(
                f"{f}: missing or changed since training (digest mismatch): retrain or restore it"
            )
    if manifest.get("features") != FEATURES:
        raise ConfigError(f"{path}: trained on other features than this BillOps computes: retrain it")
    booster = lightgbm.Booster(model_file=str(path / "model.txt"))
    cal = json.loads((path / "calibration.json").read_text(encoding="utf-8"))
    return RecoveryModel(
        path,
        manifest,
        booster,
        np.asarray(cal["x"], float),
        np.asarray(cal["y"], float),
        np.asarray(cal.get("plan_x", [0.0, 1.0]), float),
        np.asarray(cal.get("plan_y", [0.0, 1.0]), float),
        np.asarray(_thresholds(booster, FEATURES.index("attempt_number")), float),
        curse_x=np.asarray(cal.get("curse_x", [0.0, 1.0]), float),
        curse_y=np.asarray(cal.get("curse_y", [0.0, 1.0]), float),
        sequence_booster=(
            lightgbm.Booster(model_file=str(path / SEQUENCE_FILE))
            if SEQUENCE_FILE in manifest.get("files", {})
            else None
        ),
        seq_x=np.asarray(cal.get("seq_x", [0.0, 1.0]), float),
        seq_y=np.asarray(cal.get("seq_y", [0.0, 1.0]), float),
    )


HISTORY_FILE = "history.csv.gz"
SEQUENCE_FILE = "sequence.txt"


def load_history(model: RecoveryModel) -> pd.DataFrame | None:
    """The attempts the model was trained on (ATTEMPTS columns), kept in the artifact so `billops
    recovery plan` can run without `--history`; None for an artifact that holds none."""
    import gzip

    from billops.recovery.data import read_attempts

    src = model.path / HISTORY_FILE
    if not src.exists():
        return None
    with tempfile.TemporaryDirectory(prefix="billops-history-") as tmp:
        plain = Path(tmp) / "history.csv"
        with gzip.open(src, "rb") as fh_in, plain.open("wb") as fh_out:
            shutil.copyfileobj(fh_in, fh_out)
        return read_attempts(plain)


def _write_history(path: Path, history: pd.DataFrame) -> None:
    """ATTEMPTS.csv, gzipped with a fixed header time (the same history gives the same bytes)."""
    import gzip

    from billops.recovery.data import write_attempts

    plain = path.with_suffix("")
    write_attempts(plain, history)
    with plain.open("rb") as fh_in, gzip.GzipFile(path, "wb", compresslevel=3, mtime=0) as fh_out:
        shutil.copyfileobj(fh_in, fh_out)
    plain.unlink()


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def save_model(
    out: Path,
    booster: Any,
    knots: tuple[np.ndarray, np.ndarray],
    manifest: dict[str, Any],
    plan_knots: tuple[np.ndarray, np.ndarray] | None = None,
    curse_knots: tuple[np.ndarray, np.ndarray] | None = None,
    history: pd.DataFrame | None = None,
    sequence: tuple[Any, tuple[np.ndarray, np.ndarray]] | None = None,
) -> RecoveryModel:
    """Write the artifact atomically: a temporary sibling directory renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        booster.save_model(str(tmp / "model.txt"))
        seq_knots = sequence[1] if sequence else IDENTITY_KNOTS
        if sequence:
            sequence[0].save_model(str(tmp / SEQUENCE_FILE))
        (tmp / "calibration.json").write_text(
            json.dumps(
                {
                    "method": "isotonic",
                    "x": knots[0].tolist(),
                    "y": knots[1].tolist(),
                    "plan_x": (plan_knots[0] if plan_knots else np.array([0.0, 1.0])).tolist(),
                    "plan_y": (plan_knots[1] if plan_knots else np.array([0.0, 1.0])).tolist(),
                    "curse_x": (curse_knots[0] if curse_knots else np.array([0.0, 1.0])).tolist(),
                    "curse_y": (curse_knots[1] if curse_knots else np.array([0.0, 1.0])).tolist(),
                    "seq_x": seq_knots[0].tolist(),
                    "seq_y": seq_knots[1].tolist(),
                }
            ),
            encoding="utf-8",
        )
        names = ["model.txt", "calibration.json", *([SEQUENCE_FILE] if sequence else [])]
        if history is not None:
            _write_history(tmp / HISTORY_FILE, history)
            names.append(HISTORY_FILE)
        files = {n: _sha256(tmp / n) for n in names}
        h = hashlib.sha256()
        for n in sorted(files):
            h.update(f"{n}:{files[n]}\n".encode())
        h.update(json.dumps([FEATURES, manifest["vocab"]], sort_keys=True).encode())
        digest = h.hexdigest()
        manifest = {**manifest, "format": FORMAT, "files": files, "hash": digest}
        manifest["version"] = f"recovery-lgbm-{digest[:12]}"
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8"
        )
        if out.exists():
            if not (out / "manifest.json").exists() and any(out.iterdir()):
                raise InputError(f"{out}: exists and is not a model directory; refusing to replace it")
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_model(out)


# ---------------------------------------------------------------------------------------------- registry


def registry_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / "recovery"


def register(model: RecoveryModel, data_dir: Path) -> Path:
    """Copy an artifact into the registry the service reads (idempotent: same version, same place)."""
    target = registry_dir(data_dir) / model.version
    if target.resolve() == model.path.resolve() or (target / "manifest.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.version}.", dir=target.parent))
    try:
        for name in ("model.txt", "calibration.json", "manifest.json", HISTORY_FILE, SEQUENCE_FILE):
            if (model.path / name).exists():
                shutil.copy2(model.path / name, tmp / name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def list_models(data_dir: Path) -> list[dict[str, Any]]:
    """Registered models, newest first, each with its manifest (or the error that makes it unusable)."""
    root = registry_dir(data_dir)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
                found.append({"path": d, "manifest": m, "error": None})
            except (OSError, json.JSONDecodeError) as exc:
                found.append({"path": d, "manifest": {"version": d.name}, "error": str(exc)})
    found.sort(key=lambda r: str(r["manifest"].get("created_at", "")), reverse=True)
    return found


_MODELS: dict[tuple[str, float], RecoveryModel] = {}
_LATEST: dict[str, tuple[float, Path | None]] = {}


def cached_model(path: Path) -> RecoveryModel:
    """`load_model`, once per artifact version on disk (keyed by path and manifest mtime)."""
    path = Path(path).resolve()
    key = (str(path), (path / "manifest.json").stat().st_mtime)
    if key not in _MODELS:
        _MODELS[key] = load_model(path)
    return _MODELS[key]


def latest_model(data_dir: Path) -> RecoveryModel | None:
    """The newest valid registered model, or None (the rules scorer decides then). The registry is
    re-read only when its directory changes (registering renames a directory into it)."""
    root = registry_dir(data_dir)
    try:
        stamp = root.stat().st_mtime
    except FileNotFoundError:
        return None
    cached = _LATEST.get(str(root))
    if cached is None or cached[0] != stamp:
        newest = None
        for entry in list_models(data_dir):
            if entry["error"]:
                continue
            try:
                cached_model(entry["path"])
            except ConfigError:
                continue
            newest = entry["path"]
            break
        cached = (stamp, newest)
        _LATEST[str(root)] = cached
    return cached_model(cached[1]) if cached[1] is not None else None
