"""kube_harness.nodeagent.podstatus: phase and status as a kubelet reports them."""

from __future__ import annotations

from pathlib import Path

from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.podstatus import phase, pod_status

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
    "spec": {
        "initContainers": [{"name": "init", "image": "python"}],
        "containers": [{"name": "main", "image": "infleet/worker:1"}],
    },
}


def pair() -> tuple[Container, Container]:
    return (
        Container(POD["spec"]["initContainers"][0], True, Path("/x/init.log")),
        Container(POD["spec"]["containers"][0], False, Path("/x/main.log")),
    )


def exited(c: Container, code: int) -> None:
    c.state = {"terminated": {"exitCode": code}}


def test_phase() -> None:
    init, main = pair()
    assert phase([init, main], init_done=False, terminal=False) == "Pending"
    assert phase([init, main], init_done=False, terminal=True) == "Failed"  # init failed
    assert phase([init, main], init_done=True, terminal=False) == "Pending"  # not started yet
    main.started_mono = 1.0
    assert phase([init, main], init_done=True, terminal=False) == "Running"
    exited(main, 0)
    assert phase([init, main], init_done=True, terminal=True) == "Succeeded"
    exited(main, 2)
    assert phase([init, main], init_done=True, terminal=True) == "Failed"


def test_status_conditions_and_transition_times() -> None:
    init, main = pair()
    main.started_mono, main.ready = 1.0, True
    main.state = {"running": {"startedAt": "t"}}
    st = pod_status(
        POD, [init, main], phase="Running", init_done=True, pod_ip="10.0.0.5",
        host_ip="10.0.0.1", start_time="t0",
    )  # fmt: skip
    conds = {c["type"]: c for c in st["conditions"]}
    assert {t: c["status"] for t, c in conds.items()} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert st["podIP"] == "10.0.0.5" and st["hostIP"] == "10.0.0.1"
    assert [c["name"] for c in st["containerStatuses"]] == ["main"]
    assert st["containerStatuses"][0]["image"] == "infleet/worker:1"
    assert [c["name"] for c in st["initContainerStatuses"]] == ["init"]
    # unchanged conditions keep their lastTransitionTime; a flip gets a new one
    old = {**POD, "status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "long-ago"},
        {"type": "Initialized", "status": "False", "lastTransitionTime": "long-ago"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "long-ago"},
    ]}}  # fmt: skip
    main.ready = False
    st = pod_status(
        old, [init, main], phase="Running", init_done=True, pod_ip=None,
        host_ip="10.0.0.1", start_time="t0",
    )  # fmt: skip
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["Ready"]["lastTransitionTime"] != "long-ago"
    assert conds["Initialized"]["lastTransitionTime"] != "long-ago"
    assert conds["PodScheduled"]["lastTransitionTime"] == "long-ago"
    assert "podIP" not in st and conds["PodReadyToStartContainers"]["status"] == "False"
