"""Supervision of a pod's containers: init containers in order, restartPolicy with
back-off, probes of running containers, and when the pod is finished."""

from __future__ import annotations

from collections.abc import Callable

from kube_harness.nodeagent import containers as procs
from kube_harness.nodeagent import probes
from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.host import log


class Supervisor:
    def __init__(
        self,
        containers: list[Container],
        *,
        start: Callable[[Container, float], None],  # start (or fail to start) a container
        check: probes.Check,  # run one probe against a container
        kill: Callable[[Container, str], None],  # kill a container, saying why
        backoff_base: float,
        backoff_max: float,
        key: str,  # ``namespace/name`` for the log
        pod_ref: str,  # ``name_namespace(uid)`` for the CrashLoopBackOff message
    ) -> None:
        self.containers = containers
        self.start = start
        self.check = check
        self.kill = kill
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.key = key
        self.pod_ref = pod_ref
        self.init_done = not any(c.init for c in containers)
        self.terminal = False  # restartPolicy says nothing runs again

    def tick(self, now: float, policy: str) -> None:
        """One pass: reap exits, (re)start what is due, probe what runs."""
        if not self.init_done:
            self._tick_init(now, policy)
        if self.init_done:
            for c in self.containers:
                if not c.init:
                    self._tick_container(c, now, policy)
            self._check_terminal(policy)

    def reap(self, c: Container, now: float) -> None:
        code = procs.reap(c, now, self.backoff_base, self.backoff_max)
        if code is not None:
            log.info("pod %s container %s exited %s", self.key, c.name, code)

    def _tick_init(self, now: float, policy: str) -> None:
        for c in self.containers:
            if not c.init:
                continue
            if c.running():
                return
            if c.proc is not None:
                self.reap(c, now)
            term = c.state.get("terminated")
            if term and term["exitCode"] == 0:
                continue
            if term and policy == "Never":
                self.terminal = True
                return
            self._start_when_due(c, now)
            return
        self.init_done = True

    def _tick_container(self, c: Container, now: float, policy: str) -> None:
        if c.running():
            reason = probes.run_due(c, now, self.check)
            if reason:
                self.kill(c, reason)
            return
        if c.proc is not None:
            self.reap(c, now)
        term = c.state.get("terminated")
        if term and (policy == "Never" or (policy == "OnFailure" and term["exitCode"] == 0)):
            return
        self._start_when_due(c, now)

    def _start_when_due(self, c: Container, now: float) -> None:
        if now >= c.next_start:
            self.start(c, now)
            return
        waiting = procs.crash_loop(c, self.pod_ref)
        if waiting is not None:
            c.state = waiting

    def _check_terminal(self, policy: str) -> None:
        if policy == "Always":
            return
        mains = [c for c in self.containers if not c.init]
        if not all("terminated" in c.state and not c.running() for c in mains):
            return
        codes = [c.state["terminated"]["exitCode"] for c in mains]
        if policy == "OnFailure" and any(codes):
            return
        self.terminal = True
