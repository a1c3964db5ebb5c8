"""A pod's phase and status as a kubelet reports them, from its containers' states."""

from __future__ import annotations

from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.host import Obj, now_iso


def phase(containers: list[Container], init_done: bool, terminal: bool) -> str:
    mains = [c for c in containers if not c.init]
    if terminal:
        if not init_done:
            return "Failed"
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
        return "Succeeded" if all(x == 0 for x in codes) else "Failed"
    if not init_done:
        return "Pending"
    if any(c.started_mono for c in mains):
        return "Running"
    return "Pending"


def pod_status(
    pod: Obj,
    containers: list[Container],
    *,
    phase: str,
    init_done: bool,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
) -> Obj:
    """The ``status`` to write; conditions keep their transition time while unchanged."""
    mains = [c for c in containers if not c.init]
    inits = [c for c in containers if c.init]
    images = {
        c["name"]: c.get("image", "")
        for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
    }
    all_ready = all(c.ready for c in mains) and phase == "Running"
    prev = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}

    def cond(type_: str, ok: bool, reason: str = "") -> Obj:
        status = "True" if ok else "False"
        p = prev.get(type_)
        since = p["lastTransitionTime"] if p and p.get("status") == status else now_iso()
        c: Obj = {"type": type_, "status": status, "lastTransitionTime": since}
        if not ok and reason:
            c["reason"] = reason
        return c

    conds = [
        cond("PodReadyToStartContainers", pod_ip is not None),
        cond("Initialized", init_done, "ContainersNotInitialized"),
        cond("Ready", all_ready, "ContainersNotReady"),
        cond("ContainersReady", all_ready, "ContainersNotReady"),
        cond("PodScheduled", True),
    ]
    status: Obj = {
        "phase": phase,
        "conditions": conds,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [c.status(images[c.name]) for c in mains],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if inits:
        status["initContainerStatuses"] = [c.status(images[c.name]) for c in inits]
    return status
