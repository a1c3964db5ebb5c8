"""A namespace for one test, gone with its pods afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from kube_harness.testing import unique, wait_for


@contextmanager
def scratch_namespace(api: Any, prefix: str) -> Iterator[str]:
    """Created on entry; on exit deleted, and waited for until its pods are gone (their
    drain takes preStop + drain seconds): a pod torn down by the node agent while the
    next test streams from another stalls that stream."""
    name = unique(prefix)
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)
        wait_for(
            lambda: not core.list_namespaced_pod(name).items,
            timeout=60,
            interval=0.5,
            what=f"pods of {name} gone",
        )
