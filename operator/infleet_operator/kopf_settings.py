"""How kopf is configured for infleet, and the operator's own settings.

- Bookkeeping in annotations (prefix ``infleet.dev``): the CRD's structural
  schema prunes unknown ``status`` fields, and Git owns ``spec``.
- No delete handler (owner references garbage-collect the children). kopf adds
  its finalizer only to autoscaled objects, for the autoscaler's timer (kopf
  stops a timer before its object goes); its name is ours, ``infleet.dev/finalizer``.
- Peering (leader election): cluster-wide ``ClusterKopfPeering`` named
  ``--peering-name``; kopf pauses every operator that sees a peer of higher *or
  equal* priority, so each replica needs a distinct priority: ``--priority``,
  else derived from a hash of the pod name (``POD_NAME``), else of host+pid.
- No cluster scanning (no list/watch of CRDs and namespaces: minimal RBAC); the
  CRDs must be installed before the operator starts (it waits for them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import kopf

from infleet_operator import api
from infleet_operator.kube import ApiError, KubeApi

log = logging.getLogger("infleet_operator.settings")

MAX_PRIORITY = 2**31 - 1


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty + all_namespaces = cluster-wide
    all_namespaces: bool = False
    health_port: int = 8080
    metrics_port: int = 8081
    log_format: str = "text"  # text | json | full
    verbose: bool = False
    peering_name: str = "infleet-operator"
    priority: int | None = None
    standalone: bool = False
    peering_lifetime: int = 20
    status_debounce: float = 0.2
    worker_limit: int = 8

    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return priority_from(os.environ.get("POD_NAME") or f"{socket.gethostname()}:{os.getpid()}")


def priority_from(identity: str) -> int:
    """A stable, (practically) unique priority per replica: 1..2**31-1 from a hash."""
    digest = int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16)
    return 1 + digest % (MAX_PRIORITY - 1)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "infleet-operator"
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    # Only our explicit events (kopf.info/event) and handler warnings become Events.
    settings.posting.level = logging.WARNING
    settings.peering.name = config.peering_name
    settings.peering.clusterwide = True  # one ClusterKopfPeering, whatever namespaces we serve
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    settings.peering.priority = config.effective_priority()
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.stealth = True
    settings.scanning.disabled = True
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = config.worker_limit


async def ensure_peering(kube: KubeApi, name: str, logger: Any) -> None:
    """Create our ClusterKopfPeering object if missing (kopf never creates it)."""
    try:
        if await kube.get("ClusterKopfPeering", None, name) is not None:
            return
        await kube.create(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        )
        logger.info(f"created ClusterKopfPeering {name}")
    except ApiError as e:
        if e.status != 409:  # 409: a peer created it first
            logger.error(f"cannot ensure ClusterKopfPeering {name}: {e}")
