"""Reading and replacing the policy file from the API and the console (admin).

A new policy is validated first, must carry a new `version` when its content changes, and is written
atomically (temporary file, then rename) so workers never read half a file; every running worker picks
it up on its next decision (the loader watches the file). A copy of every version is kept under
<data_dir>/policy-history/, and the change is audited with both versions and digests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from billops.config import DEFAULT_POLICY_FILE
from billops.errors import BillopsError, ConfigError, Conflict
from billops.governance import audit
from billops.policy import parse_policy
from billops.runtime import Runtime


def policy_path(rt: Runtime) -> Path:
    return (rt.settings.policy_file or DEFAULT_POLICY_FILE).resolve()


def policy_view(rt: Runtime) -> dict[str, Any]:
    path = policy_path(rt)
    policy = rt.policy()
    return {
        "version": policy.version,
        "full_version": policy.full_version,
        "digest": policy.digest,
        "path": str(path),
        "packaged_default": rt.settings.policy_file is None,
        "text": path.read_text(encoding="utf-8"),
        "policy": policy.model_dump(mode="json", exclude={"digest"}),
    }


def replace_policy(rt: Runtime, text: str, *, by: str) -> dict[str, Any]:
    if rt.settings.policy_file is None:
        raise Conflict(
            "the packaged default policy is in use: set BILLOPS_POLICY_FILE to a file of your own "
            "(copy the default from GET /api/policy) before replacing it"
        )
    try:
        new = parse_policy(text, "new policy")
    except ConfigError as exc:  # says which field is wrong; the file on disk is untouched
        raise BillopsError(exc.message, 422) from None
    old = rt.policy()
    if new.digest == old.digest:
        raise Conflict(f"the policy is already version {old.full_version}: nothing to change")
    if new.version == old.version:
        raise BillopsError(
            f"the content changed but the version did not: bump `version` (now {old.version!r})", 422
        )
    path = policy_path(rt)
    history = (Path(rt.settings.data_dir) / "policy-history").resolve()
    # `version` is constrained to a safe file name (config.Policy); refuse anything outside the folder anyway
    copy = (history / f"{new.version}+{new.digest[:10]}.yaml").resolve()
    if copy.parent != history:
        raise BillopsError(f"`version` {new.version!r} cannot be used as a file name", 422)
    history.mkdir(parents=True, exist_ok=True)
    copy.write_text(text, encoding="utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with rt.db.session() as s:
        audit.record(
            s,
            action="policy.updated",
            actor_type="human",
            actor=by,
            subject=f"policy:{path.name}",
            versions={"policy": new.full_version, "previous": old.full_version},
            inputs=text,
            outcome={"version": new.version, "digest": new.digest, "previous_digest": old.digest},
        )
        os.replace(tmp, path)  # inside the transaction: if the rename fails, the audit record rolls back
    return policy_view(rt)
