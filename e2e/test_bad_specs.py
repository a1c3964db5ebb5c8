"""The bad-spec table (tests/spec_cases.py) against the real API server.

Each case is applied as ``kubectl apply --server-side --dry-run=server`` does it (an
apply patch with ``dryRun=All``). The server must refuse every bad case with exactly one
error, at the table's field path, with the table's words, and ``infleet validate`` must
print the same path and the same words; the valid cases pass both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from fleet.operator import GROUP, PLURAL, ROOT, VERSION, kubectl
from infleet_operator import api as models
from infleet_operator import manifests
from spec_cases import INVALID_CASES, VALID_CASES, SpecCase

pytestmark = pytest.mark.cluster

# "failed to create typed patch object (...): .spec.engine.gpus: field not declared in schema"
TYPED_PATCH = re.compile(r"^failed to create typed patch object \([^)]*\): (\S+): (.*)$")
UNCHECKED = "some validation rules were not checked"


@pytest.fixture(scope="module")
def custom(cluster: Any) -> Iterator[client.CustomObjectsApi]:
    kubectl(cluster, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
            f"crd/{PLURAL}.{GROUP}")  # fmt: skip
    yield client.CustomObjectsApi(cluster.api_client())


def server_errors(custom: client.CustomObjectsApi, case: SpecCase) -> list[tuple[str, str]]:
    """(field path, message) of each error a server-side dry-run apply answers."""
    try:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, case.name, case.document(),
            dry_run="All", field_manager="e2e-bad-specs", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
    except ApiException as e:
        status = json.loads(e.body)
        causes = (status.get("details") or {}).get("causes")
        if causes:
            return [
                (c.get("field", "").lstrip("."), c.get("message", ""))
                for c in causes
                if UNCHECKED not in c.get("message", "")
            ]
        match = TYPED_PATCH.match(status.get("message", ""))
        assert match, status
        return [(match.group(1).lstrip("."), match.group(2))]
    return []


def validate_errors(case: SpecCase) -> list[tuple[str, str]]:
    """What ``infleet validate`` prints for the case, as (field path, message)."""
    try:
        models.InferenceDeployment.model_validate(case.document())
    except ValidationError as exc:
        return [tuple(line.split(": ", 1)) for line in manifests.format_errors(exc)]  # type: ignore[misc]
    return []


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_bad_spec_refused_once_at_the_field_as_validate_says(
    custom: client.CustomObjectsApi, case: SpecCase
) -> None:
    server = server_errors(custom, case)
    assert len(server) == 1, f"{case.id}: expected one error, the server said {server}"
    path, message = server[0]
    assert path == case.path, server
    assert case.message in message, server
    ours = validate_errors(case)
    assert [p for p, _ in ours] == [path], ours
    assert case.message in ours[0][1], ours


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda c: c.id)
def test_valid_spec_accepted_by_both(custom: client.CustomObjectsApi, case: SpecCase) -> None:
    assert server_errors(custom, case) == []
    assert validate_errors(case) == []
