"""``infleet-operator``: run the InferenceDeployment operator.

Settings come from flags, each with an environment variable (flags win):

  --namespace/-n NS (repeatable)  INFLEET_NAMESPACES=a,b   serve these namespaces
  --all-namespaces/-A             INFLEET_ALL_NAMESPACES=1 serve the whole cluster (default
                                                           when no namespace is named)
  --health-port N                 INFLEET_HEALTH_PORT      GET /healthz (kopf liveness), 0 = off
  --metrics-port N                INFLEET_METRICS_PORT     Prometheus /metrics, 0 = off
  --log-format text|json|full     INFLEET_LOG_FORMAT
  --verbose                       INFLEET_VERBOSE=1
  --peering-name NAME             INFLEET_PEERING_NAME     ClusterKopfPeering (leader election)
  --priority N                    INFLEET_PEERING_PRIORITY distinct per replica (default: hash
                                                           of POD_NAME, else host+pid)
  --standalone                    INFLEET_STANDALONE=1     no peering (a single replica)
  --kubeconfig PATH               KUBECONFIG               else in-cluster ServiceAccount
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence

from infleet_operator.kopf_settings import OperatorConfig


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def parse_args(argv: Sequence[str] | None = None) -> tuple[OperatorConfig, str | None]:
    p = argparse.ArgumentParser(
        prog="infleet-operator",
        description="Reconcile InferenceDeployments (infleet.dev/v1alpha1) into worker fleets.",
    )
    p.add_argument("-n", "--namespace", action="append", default=None, dest="namespaces")
    p.add_argument("-A", "--all-namespaces", action="store_true", default=None)
    p.add_argument("--health-port", type=int, default=_env_int("INFLEET_HEALTH_PORT", 8080))
    p.add_argument("--metrics-port", type=int, default=_env_int("INFLEET_METRICS_PORT", 8081))
    p.add_argument(
        "--log-format",
        choices=["text", "json", "full"],
        default=os.environ.get("INFLEET_LOG_FORMAT", "text"),
    )
    p.add_argument("--verbose", action="store_true", default=_env_bool("INFLEET_VERBOSE"))
    p.add_argument(
        "--peering-name", default=os.environ.get("INFLEET_PEERING_NAME", "infleet-operator")
    )
    p.add_argument("--priority", type=int, default=_env_int("INFLEET_PEERING_PRIORITY", None))
    p.add_argument("--standalone", action="store_true", default=_env_bool("INFLEET_STANDALONE"))
    p.add_argument("--kubeconfig", default=None)
    a = p.parse_args(argv)
    namespaces = a.namespaces
    if namespaces is None:
        namespaces = [n for n in os.environ.get("INFLEET_NAMESPACES", "").split(",") if n.strip()]
    all_ns = (
        a.all_namespaces if a.all_namespaces is not None else _env_bool("INFLEET_ALL_NAMESPACES")
    )
    if all_ns and namespaces:
        p.error("--all-namespaces and --namespace exclude each other")
    cfg = OperatorConfig(
        namespaces=[n.strip() for n in namespaces],
        all_namespaces=all_ns or not namespaces,
        health_port=a.health_port,
        metrics_port=a.metrics_port,
        log_format=a.log_format,
        verbose=a.verbose,
        peering_name=a.peering_name,
        priority=a.priority,
        standalone=a.standalone,
    )
    return cfg, a.kubeconfig


async def wait_for_crd(timeout: float | None = None) -> None:
    """Block until the API server serves infleet.dev/v1alpha1 (kopf does not scan later)."""
    from infleet_operator import api
    from infleet_operator.kube import ApiError, Kube

    kube = Kube.from_env()
    log = logging.getLogger("infleet_operator")
    t0 = time.monotonic()
    try:
        while True:
            try:
                doc = await kube.request("GET", f"/apis/{api.GROUP}/{api.VERSION}")
                if any(r.get("name") == api.PLURAL for r in doc.get("resources", [])):
                    return
            except ApiError as e:
                if e.status != 404:
                    raise
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise TimeoutError(f"CRD {api.PLURAL}.{api.GROUP} is not installed")
            log.warning("waiting for CRD %s.%s to be installed", api.PLURAL, api.GROUP)
            await asyncio.sleep(5)
    finally:
        await kube.close()


async def run(cfg: OperatorConfig) -> None:
    import kopf

    from infleet_operator import handlers  # noqa: F401  (registers the handlers)
    from infleet_operator.scaler import timer  # noqa: F401  (the autoscaler timer)

    await wait_for_crd()
    if cfg.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port)
    liveness = f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None
    await kopf.operator(
        clusterwide=cfg.all_namespaces,
        namespaces=[] if cfg.all_namespaces else cfg.namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=cfg),
        standalone=cfg.standalone,
    )


def use_kubeconfig(path: str) -> None:
    """Point both kopf's login and our client at ``path``.

    The kubernetes package reads $KUBECONFIG once, when it is imported, and kopf
    imports it before any flag is parsed; so the module default is set as well.
    """
    os.environ["KUBECONFIG"] = path
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path


def main(argv: Sequence[str] | None = None) -> int:
    cfg, kubeconfig = parse_args(argv)
    if kubeconfig:
        use_kubeconfig(kubeconfig)
    if os.environ.get("POD_NAME") and not os.environ.get("POD_ID"):
        os.environ["POD_ID"] = os.environ["POD_NAME"]  # kopf's peering identity
    import kopf

    kopf.configure(
        verbose=cfg.verbose,
        log_format={
            "text": kopf.LogFormat.PLAIN,
            "json": kopf.LogFormat.JSON,
            "full": kopf.LogFormat.FULL,
        }[cfg.log_format],
    )
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
