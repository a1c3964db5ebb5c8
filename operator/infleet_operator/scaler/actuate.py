"""Write the replica count under the autoscaler's own field manager.

Only this field manager ever sets the worker Deployment's ``spec.replicas``
when autoscaling is on; the reconcile's server-side apply leaves the field out,
so the two never fight (and Git, which owns the InferenceDeployment's spec,
never sees a diff).
"""

from __future__ import annotations

from typing import Any

FIELD_MANAGER = "infleet-autoscaler"


def replicas_apply_body(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """The whole server-side-apply body the autoscaler owns: one field."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }
