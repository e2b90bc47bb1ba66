"""Hostile or careless input to the admin surfaces (issue 14): a policy `version` that is not a safe file
name, policy YAML nested too deeply, and approval references that are not ASCII numbers. Each gets a
clear 4xx through the API or a one-line CLI error (exit 2, no traceback), and nothing is written.

The CLI is run as the installed `billops` entry point in a subprocess, exactly as an operator runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from billops.app import create_app
from billops.config import DEFAULT_POLICY_FILE
from billops.errors import ConfigError
from billops.policy import POLICY_MAX_DEPTH, Policy, parse_policy
from billops.store.models import Approval, AuditRecord, Decision
from support.auth import bearer, database, token_for

BILLOPS = Path(sys.executable).with_name("billops")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BILLOPS_")}
    return subprocess.run(
        [str(BILLOPS), *args],
        env={**base, "PYTHONUTF8": "1", "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_cli_error(r: subprocess.CompletedProcess[str], *says: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Error" not in r.stderr.replace("error:", ""), r.stderr
    assert r.stderr.startswith("error:"), r.stderr
    for s in says:
        assert s in r.stderr, (s, r.stderr)


def policy_text(version: str) -> str:
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    raw["version"] = version
    return yaml.safe_dump(raw)


# ---------------------------------------------------------------- the policy version


@pytest.mark.parametrize(
    "version",
    ["2026-11-22.2", "v1", "Q4_2026.rc-1", "a" * 64, "0"],  # the packaged and docs' style too
)
def test_safe_versions_are_accepted(version: str) -> None:
    assert parse_policy(policy_text(version), "t").version == version


@pytest.mark.parametrize(
    "version",
    ["../../x", "a/b", "..", ".hidden", "-rf", "a\\b", "a b", "x\x00y", "é", "a" * 65, "", "a+b", "C:x"],
)
def test_unsafe_versions_are_refused_naming_the_field(version: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_policy(policy_text(version), "t")
    assert "invalid version" in exc.value.message and "A-Za-z0-9" in exc.value.message


def test_the_packaged_policy_and_the_documented_example_still_validate() -> None:
    assert parse_policy(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"), "packaged").version
    documented = [
        m.group(1)
        for doc in (Path(__file__).parents[2] / "docs").rglob("*.md")
        for m in re.finditer(r'^\s*version: "?([^"\n]+)"?$', doc.read_text(encoding="utf-8"), re.M)
    ]
    assert "2026-11-22.2" in documented  # docs/policy.md's example
    for version in documented:
        assert parse_policy(policy_text(version), "docs").version == version


@pytest.fixture
def admin_api(
    database_url: str, settings_factory: Any, runtime_factory: Any, tmp_path: Path
) -> Iterator[TestClient]:
    settings = settings_factory(database_url)
    rt = runtime_factory(settings)
    headers = bearer(token_for(rt, "admin"))
    with TestClient(create_app(settings, manage_runtime=False), raise_server_exceptions=False) as c:
        c.headers.update(headers)
        c.rt = rt  # type: ignore[attr-defined]
        yield c


def _policy_updates(rt: Any) -> int:
    with rt.db.reader() as s:
        q = sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "policy.updated")
        return int(s.scalar(q) or 0)


def _yaml_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*.yaml")}


def test_a_version_that_is_not_a_file_name_is_422_and_writes_nothing(
    admin_api: TestClient, tmp_path: Path
) -> None:
    rt = admin_api.rt  # type: ignore[attr-defined]
    path = rt.settings.policy_file
    before, files = path.read_text(), _yaml_files(tmp_path)
    for version in ("../../escaped", "a/b", "../policy-history2/x"):
        r = admin_api.put("/api/policy", json={"text": policy_text(version)})
        assert r.status_code == 422, r.text
        assert "new policy" in r.json()["error"] and "version" in r.json()["error"]
    assert path.read_text() == before and _yaml_files(tmp_path) == files  # nothing written anywhere
    assert _policy_updates(rt) == 0

    # a good version is still taken, and its copy lands inside policy-history/
    r = admin_api.put("/api/policy", json={"text": policy_text("2026-12-01.1")})
    assert r.status_code == 200, r.text
    history = Path(rt.settings.data_dir) / "policy-history"
    new = _yaml_files(tmp_path) - files
    assert len(new) == 1 and next(iter(new)).parent == history
    assert next(iter(new)).name.startswith("2026-12-01.1+") and _policy_updates(rt) == 1


def test_the_history_writer_refuses_a_path_outside_its_folder_even_past_validation(
    admin_api: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: were a bad version ever to get past the model, the writer still refuses it."""
    import billops.governance.policy_admin as policy_admin

    def unchecked(text: str, source: str) -> Policy:  # model_copy does not validate
        return parse_policy(text, source).model_copy(update={"version": "../../escaped"})

    monkeypatch.setattr(policy_admin, "parse_policy", unchecked)
    rt = admin_api.rt  # type: ignore[attr-defined]
    before, files = rt.settings.policy_file.read_text(), _yaml_files(tmp_path)
    r = admin_api.put("/api/policy", json={"text": policy_text("2026-12-01.1")})
    assert r.status_code == 422, r.text
    assert "cannot be used as a file name" in r.json()["error"]
    assert rt.settings.policy_file.read_text() == before and _yaml_files(tmp_path) == files
    assert not (tmp_path / "data" / "policy-history").exists() or not any(
        (tmp_path / "data" / "policy-history").iterdir()
    )
    assert _policy_updates(rt) == 0


def test_policy_check_refuses_an_unsafe_version(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(policy_text("../../x"), encoding="utf-8")
    assert_cli_error(run_cli("policy", "check", str(f)), "invalid version", str(f))
    f.write_text(policy_text("2026-12-01.1"), encoding="utf-8")
    r = run_cli("policy", "check", str(f))
    assert r.returncode == 0 and "is valid" in r.stdout, r.stderr


# ---------------------------------------------------------------- YAML nested too deeply


def _block_maps(levels: int) -> str:
    return (
        "version: v1\nx:\n"
        + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(levels))
        + " " * (levels + 1)
        + "1\n"
    )


@pytest.mark.parametrize(
    "name, text",
    [
        ("lists", "version: v1\nx: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ("maps", "version: v1\nx: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n"),
        ("unclosed", "[" * 100_000),
        ("block maps", _block_maps(2_000)),
    ],
)
def test_policy_check_refuses_yaml_nested_too_deeply(tmp_path: Path, name: str, text: str) -> None:
    f = tmp_path / "deep.yaml"
    f.write_text(text, encoding="utf-8")
    assert_cli_error(
        run_cli("policy", "check", str(f)), str(f), "nested too deeply", f"{POLICY_MAX_DEPTH} levels"
    )


def test_nesting_up_to_the_limit_is_judged_on_its_content() -> None:
    """At the limit the file is parsed as usual: the error is about the field, not the depth."""
    ok_depth = "version: v1\nx: " + "[" * (POLICY_MAX_DEPTH - 1) + "]" * (POLICY_MAX_DEPTH - 1) + "\n"
    with pytest.raises(ConfigError) as exc:
        parse_policy(ok_depth, "t")
    assert "x" in exc.value.message and "nested too deeply" not in exc.value.message
    with pytest.raises(ConfigError) as exc:
        parse_policy(ok_depth.replace("[", "[[", 1).replace("]", "]]", 1), "t")
    assert "nested too deeply" in exc.value.message


# ---------------------------------------------------------------- approval references


@pytest.fixture
def one_approval(
    database_url: str, make_policy: Callable[..., Path], tmp_path: Path
) -> tuple[int, dict[str, str]]:
    at = datetime.now(UTC)
    with database(database_url) as db, db.session() as s:
        s.add(
            Decision(
                workflow_id="stripe:evt_ref",
                platform="stripe",
                invoice_id="in_ref",
                customer_id="cus_ref",
                event_id="evt_ref",
                amount=4900,
                currency="usd",
                route="retry_and_notify",
                score=50,
                mode="assist",
                status="awaiting_approval",
                plan={},
                versions={},
                trace_id="t",
            )
        )
        appr = Approval(
            workflow_id="stripe:evt_ref",
            status="pending",
            reason_for_review="assist mode",
            expires_at=at + timedelta(days=2),
        )
        s.add(appr)
        s.flush()
        ident = appr.id
    env = {
        "BILLOPS_DATABASE_URL": database_url,
        "BILLOPS_DATA_DIR": str(tmp_path / "data"),
        "BILLOPS_POLICY_FILE": str(make_policy()),
    }
    return ident, env


def test_approvals_show_refuses_refs_that_are_not_ascii_numbers_or_out_of_range(
    one_approval: tuple[int, dict[str, str]],
) -> None:
    ident, env = one_approval
    for ref in (
        "²",
        "٣",
        "1²",
        str(ident) + "\u0663",
        "2147483648",
        "9223372036854775808",
        "1" + "0" * 5_000,
    ):
        assert_cli_error(run_cli("approvals", "show", ref, env=env), "no approval")
    # the real ones are still found, by number (leading zeros too) and by workflow id
    for ref in (str(ident), f"00{ident}", "stripe:evt_ref"):
        r = run_cli("approvals", "show", ref, env=env)
        assert r.returncode == 0, r.stderr
        assert yaml.safe_load(r.stdout)["workflow_id"] == "stripe:evt_ref"
