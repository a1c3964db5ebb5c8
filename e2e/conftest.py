"""Fixtures for tests on the real Kubernetes control plane (see e2e/README.md).

``cluster`` (session scope) is a started :class:`kube_harness.cluster.Cluster`:

- ``cluster.kubeconfig`` (Path), ``cluster.server`` (``https://<gateway>:<port>``)
- ``cluster.api_client()`` -> a fresh ``kubernetes.client.ApiClient`` (admin)
- ``cluster.gateway`` -> the bridge gateway IP: pods reach the host there
- ``cluster.kubectl`` / ``cluster.helm`` (Paths), ``cluster.env`` (KUBECONFIG etc.),
  ``cluster.run_kubectl(*args)`` / ``cluster.run_helm(*args)``
- ``cluster.agent`` -> the node agent (``.nodes``, ``.processes()``, ``.describe()``)
- ``cluster.logs()`` -> component log tails (attached to failed tests' reports)

``api`` (module scope): an admin ApiClient of the cluster; ``operator`` (module
scope): the operator running as a process against it (a test module may define its
own, with other settings), its log tail printed at the end.

A test marked ``@pytest.mark.cluster`` that uses it fails (does not skip) when
the binaries are missing; ``INFLEET_SKIP_CLUSTER=1`` skips such tests instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from kube_harness.build import BinariesMissing, find_binaries
from kube_harness.cluster import Cluster

_CLUSTER: Cluster | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: runs on the real Kubernetes control plane")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("INFLEET_SKIP_CLUSTER") == "1":
        skip = pytest.mark.skip(reason="INFLEET_SKIP_CLUSTER=1: real control plane not started")
        for item in items:
            if "cluster" in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.failed and _CLUSTER is not None and "cluster" in getattr(item, "fixturenames", ()):
        try:
            rep.sections.append(("kube-harness logs", _CLUSTER.logs(40)))
        except Exception as e:  # never mask the real failure
            rep.sections.append(("kube-harness logs", f"(could not collect: {e})"))


@pytest.fixture(scope="session")
def cluster_binaries() -> Any:
    if os.environ.get("INFLEET_SKIP_CLUSTER") == "1":
        pytest.skip("INFLEET_SKIP_CLUSTER=1")
    try:
        return find_binaries()
    except BinariesMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def cluster(cluster_binaries: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    global _CLUSTER
    if os.geteuid() != 0:
        pytest.fail("the test cluster needs root (network namespaces, bind mounts)", pytrace=False)
    c = Cluster(
        run_dir=tmp_path_factory.mktemp("kube"),
        nodes=int(os.environ.get("INFLEET_TEST_NODES", "2")),
        gpus_per_node=int(os.environ.get("INFLEET_TEST_GPUS_PER_NODE", "2")),
        binaries=cluster_binaries,
    )
    c.start()
    print(f"\n[kube_harness] cluster started in {c.start_seconds:.1f}s; run dir {c.run_dir}")
    _CLUSTER = c
    try:
        yield c
    finally:
        _CLUSTER = None
        c.stop()


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Any:
    return cluster.api_client()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fleet.operator import OperatorProcess, install_operator_prereqs

    kubeconfig = install_operator_prereqs(cluster, tmp_path_factory.mktemp("operator"))
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("oplogs"))
    op.start()
    op.wait_log("Resuming operations", timeout=60)
    yield op
    op.stop()
    print(f"\n[operator log tail]\n{op.text()[-3000:]}")
