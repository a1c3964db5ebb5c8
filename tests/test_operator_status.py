"""Status computation from observed children and pods (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from infleet_operator import api, events, status

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
SPEC = {
    "model": {"name": "mlp", "source": "builtin://mlp"},
    "engine": {"device": "cpu"},
    "replicas": 2,
}


def idep(generation: int = 1, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": spec or SPEC,
    }


def dep(
    replicas: int = 2,
    ready: int = 2,
    updated: int = 2,
    current: int | None = None,
    generation: int = 1,
    observed: int = 1,
    conditions: list[Any] | None = None,
) -> dict:
    return {
        "metadata": {"name": "m", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if current is None else current,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": conditions or [],
        },
    }


def pod(
    name: str = "m-1",
    ready: bool = True,
    created: str = "2026-01-01T11:59:00Z",
    ready_at: str = "2026-01-01T11:59:12Z",
    **status_extra: Any,
) -> dict:
    conds = [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_at}
    ]
    conds += status_extra.pop("conditions", [])
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"conditions": conds, **status_extra},
    }


def compute(
    body: dict,
    deployment: dict | None,
    pods: list[dict],
    observed: int | None = 1,
    error: tuple[str, str] | None = None,
) -> dict:
    spec = api.InferenceDeploymentSpec.model_validate(body["spec"])
    return status.compute(
        body, spec, deployment, pods, observed_generation=observed, now=NOW, error=error
    )


def conds(st: dict) -> dict[str, dict]:
    return {c["type"]: c for c in st["conditions"]}


def test_all_ready() -> None:
    st = compute(idep(), dep(), [pod("a"), pod("b")])
    c = conds(st)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "AllReplicasReady"
    assert c["Progressing"]["status"] == "False"
    assert c["Degraded"]["status"] == "False"
    assert st["observedGeneration"] == 1
    assert st["replicas"] == 2 and st["readyReplicas"] == 2 and st["desiredReplicas"] == 2
    assert st["selector"] == "app.kubernetes.io/instance=m,app.kubernetes.io/name=infleet-worker"
    assert st["endpoint"]["http"] == "http://m.ns.svc:8000"
    assert st["gpusPerPod"] == 0
    assert st["podStartSeconds"] == 12.0
    assert status.summary(st).startswith("Ready=True")


def test_api_model_accepts_status() -> None:
    st = compute(idep(), dep(), [pod()])
    api.InferenceDeploymentStatus.model_validate(st)


def test_new_generation_is_progressing_then_ready() -> None:
    # spec changed, not reconciled yet
    st = compute(idep(generation=2), dep(), [pod()], observed=1)
    assert conds(st)["Progressing"]["reason"] == "Reconciling"
    assert conds(st)["Ready"]["status"] == "False"
    # applied: Deployment has a new generation, the controller has not caught up
    st = compute(idep(2), dep(generation=2, observed=1), [pod()], observed=2)
    assert conds(st)["Progressing"]["status"] == "True"
    # rolling: one updated pod, one old pod still there
    st = compute(idep(2), dep(generation=2, observed=2, updated=1, current=3), [pod()], 2)
    c = conds(st)
    assert c["Progressing"]["reason"] == "RollingUpdate" and c["Ready"]["status"] == "False"
    assert "still serve" in c["Ready"]["message"]
    st = compute(idep(2), dep(generation=2, observed=2), [pod()], 2)
    assert conds(st)["Ready"]["status"] == "True" and st["observedGeneration"] == 2


def test_image_pull_backoff_is_degraded() -> None:
    p = pod(
        ready=False,
        containerStatuses=[
            {
                "name": "worker",
                "image": "nope/infleet:1",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            }
        ],
    )
    st = compute(idep(), dep(ready=0), [p])
    c = conds(st)
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "ImagePullBackOff"
    assert "nope/infleet:1" in c["Degraded"]["message"] and "spec.image" in c["Degraded"]["message"]
    assert c["Ready"]["reason"] == "ImagePullBackOff"


def test_crash_loop_names_exit_code_and_last_line() -> None:
    p = pod(
        ready=False,
        containerStatuses=[
            {
                "name": "worker",
                "image": "x",
                "ready": False,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                "lastState": {
                    "terminated": {"exitCode": 2, "message": "loading\nValueError: no model"}
                },
            }
        ],
    )
    c = conds(compute(idep(), dep(ready=0), [p]))["Degraded"]
    assert c["reason"] == "CrashLoopBackOff"
    assert "code 2" in c["message"] and "ValueError: no model" in c["message"]
    assert "3 restarts" in c["message"]


def test_unschedulable_gpus() -> None:
    spec = dict(SPEC, engine={"device": "cuda", "pipelineParallel": 2})
    p = pod(
        ready=False,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    st = compute(idep(spec=spec), dep(ready=0), [p])
    c = conds(st)["Degraded"]
    assert c["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in c["message"] and "pipelineParallel" in c["message"]
    assert st["gpusPerPod"] == 2


def test_stuck_rollout() -> None:
    d = dep(
        ready=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "timed out",
            }
        ],
    )
    c = conds(compute(idep(), d, [pod()]))
    assert c["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert c["Progressing"]["status"] == "False"


def test_reconcile_error_and_scale_to_zero() -> None:
    c = conds(compute(idep(), dep(), [pod()], error=("InvalidSpec", "bad volume")))
    assert c["Degraded"]["reason"] == "InvalidSpec" and c["Ready"]["status"] == "False"
    c = conds(compute(idep(), dep(replicas=0, ready=0, updated=0), []))
    assert c["Ready"]["reason"] == "ScaledToZero"


def test_no_deployment_yet() -> None:
    st = compute(idep(), None, [], observed=None)
    assert conds(st)["Progressing"]["status"] == "True"
    assert st["desiredReplicas"] == 2 and st["readyReplicas"] == 0


def test_transition_time_kept_and_foreign_conditions_kept() -> None:
    body = idep()
    first = compute(body, dep(), [pod()])
    body["status"] = dict(first)
    body["status"]["conditions"] = [
        *first["conditions"],
        {"type": "ScalingLimited", "status": "True", "reason": "AtMax", "message": ""},
    ]
    later = status.compute(
        body,
        api.InferenceDeploymentSpec.model_validate(SPEC),
        dep(),
        [pod()],
        observed_generation=1,
        now=NOW + dt.timedelta(minutes=5),
    )
    assert not status.changed(body["status"], later)  # same picture: no write
    assert "ScalingLimited" in conds(later)
    flipped = status.compute(
        body,
        api.InferenceDeploymentSpec.model_validate(SPEC),
        dep(ready=1),
        [pod()],
        observed_generation=1,
        now=NOW + dt.timedelta(minutes=5),
    )
    assert conds(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert conds(flipped)["Degraded"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_terminating_pods_are_ignored() -> None:
    p = pod(
        ready=False,
        containerStatuses=[
            {
                "name": "worker",
                "image": "x",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 143}},
            }
        ],
    )
    p["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:59Z"
    assert conds(compute(idep(), dep(), [pod(), p]))["Degraded"]["status"] == "False"


def test_transition_events() -> None:
    ready = compute(idep(), dep(), [pod()])
    assert [e.reason for e in events.status_transitions(None, ready)] == ["Ready"]
    p = pod(
        ready=False,
        containerStatuses=[
            {
                "name": "worker",
                "image": "x",
                "ready": False,
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1}},
            }
        ],
    )
    broken = compute(idep(), dep(ready=0), [p])
    evs = events.status_transitions(ready, broken)
    assert [(e.type, e.reason) for e in evs] == [
        ("Warning", "CrashLoopBackOff"),
        ("Normal", "NotReady"),
    ]
    assert events.status_transitions(broken, broken) == []


def test_scale_up_of_current_spec_stays_ready() -> None:
    """The autoscaler adding pods is not an outage: Ready stays True (ScalingUp)."""
    body = idep()
    body["status"] = compute(body, dep(), [pod("a"), pod("b")])  # Ready at 2/2 first
    st = compute(
        body,
        dep(replicas=4, ready=2, updated=4),
        [pod("a"), pod("b"), pod("c", ready=False), pod("d", ready=False)],
    )
    c = conds(st)
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "ScalingUp"
    assert "2/4 replicas ready, 2 starting" in c["Ready"]["message"]
    assert c["Progressing"]["status"] == "True"


def test_rollout_of_new_spec_is_not_ready_until_done() -> None:
    st = compute(
        idep(generation=2),
        dep(replicas=2, ready=2, updated=1, generation=2, observed=2, current=3),
        [pod("a"), pod("b"), pod("c", ready=False)],
        observed=2,
    )
    assert conds(st)["Ready"]["status"] == "False"


def test_scale_up_with_a_broken_pod_is_not_ready() -> None:
    broken = pod(
        "c",
        ready=False,
        containerStatuses=[
            {
                "name": "worker",
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "model load failed"}},
            }
        ],
    )
    st = compute(idep(), dep(replicas=3, ready=2, updated=3), [pod("a"), pod("b"), broken])
    assert conds(st)["Ready"]["status"] == "False"
    assert conds(st)["Degraded"]["status"] == "True"


def test_first_rollout_is_not_ready_until_complete() -> None:
    st = compute(idep(), dep(replicas=2, ready=1, updated=2), [pod("a"), pod("b", ready=False)])
    assert conds(st)["Ready"]["status"] == "False"


def _worker_pod(name: str, restarts: int, message: str = "") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "worker", "ready": True, "restartCount": restarts}
    if message:
        cs["lastState"] = {"terminated": {"exitCode": 1, "message": message}}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [cs]}}


def test_worker_restart_is_an_event_saying_why() -> None:
    seen: dict[str, int] = {}
    assert events.worker_restarts(seen, [_worker_pod("p", 0)]) == []
    log = "ready\nthe engine core died (exit code 3): fatal device error: device-side assert\n"
    (ev,) = events.worker_restarts(seen, [_worker_pod("p", 1, log)])
    assert ev.type == "Warning" and ev.reason == "WorkerRestarted"
    assert "pod p exited with code 1" in ev.message and "device-side assert" in ev.message
    assert events.worker_restarts(seen, [_worker_pod("p", 1, log)]) == []  # once per restart
    # first sight of an old restart (the operator itself restarted): no event
    assert events.worker_restarts(seen, [_worker_pod("q", 4, log)]) == []
    assert set(seen) == {"q/worker"}  # gone pods are forgotten
