"""Record an InferenceDeployment's status while a live run goes on (e2e autoscaling).

Every RECORD_S: (t, queueDepth, readyReplicas, desiredReplicas) for the run's
printout, each status.podStartSeconds published, each distinct
status.autoscaler.lastDecision: the instants the operator decided at (its
timer's phase, which the simulator replays), and how many pods took traffic
(when each new pod really started serving, which the simulator replays too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

GROUP, VERSION, PLURAL = "infleet.dev", "v1alpha1", "inferencedeployments"
RECORD_S = 0.25  # how often the recorder reads status: the resolution of the times it sees


class StatusRecorder:
    """Samples status every RECORD_S, times in seconds since ``t0`` (monotonic)."""

    def __init__(
        self,
        custom: Any,
        ns: str,
        name: str,
        t0: float | None = None,
        serving: Callable[[], int] | None = None,
    ) -> None:
        self.custom, self.ns, self.name, self._serving = custom, ns, name, serving
        self.serving: list[tuple[float, int]] = []  # (t, pods taking traffic)
        self.samples: list[tuple[float, float | None, int, int | None]] = []
        self.pod_start: list[float] = []  # status.podStartSeconds as it was published
        self.decisions: set[str] = set()  # status.autoscaler.lastDecision values seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic() if t0 is None else t0
        # Wall-clock time at t0: the operator stamps its decisions in UTC.
        self.wall_at_t0 = time.time() - (time.monotonic() - self.t0)

    def _run(self) -> None:
        while not self._stop.wait(RECORD_S):
            if self._serving is not None:
                self.serving.append((time.monotonic() - self.t0, self._serving()))
            try:
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.ns, PLURAL, self.name
                )
            except Exception:
                continue
            st = obj.get("status") or {}
            auto = st.get("autoscaler") or {}
            if st.get("podStartSeconds") is not None:
                self.pod_start.append(float(st["podStartSeconds"]))
            if auto.get("lastDecision"):
                self.decisions.add(str(auto["lastDecision"]))
            self.samples.append(
                (
                    time.monotonic() - self.t0,
                    auto.get("queueDepth"),
                    int(st.get("readyReplicas") or 0),
                    auto.get("desiredReplicas"),
                )
            )

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
