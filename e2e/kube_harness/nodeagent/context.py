"""What a pod worker may know of its node: a frozen view, handed out by the agent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kube_harness.net import Network
from kube_harness.nodeagent.mounts import MountPoints


@dataclass(frozen=True)
class NodeContext:
    run_dir: Path  # pods' directories live under it
    host_ip: str  # the node's address: the API server's gateway on the cluster bridge
    api_port: int
    cpu: str  # node capacity: the default of resourceFieldRef limits
    memory: str
    venv: Path  # where image entry points and python resolve
    backoff_base: float  # restart back-off: base, 2*base, ... up to max
    backoff_max: float
    network: Network  # pod network namespaces
    mounts: MountPoints  # host mountpoints shared with other agents
