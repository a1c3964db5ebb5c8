"""Acceptance tests of the harness itself, all on the real control plane."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_harness.cluster import Cluster
from kube_harness.testing import host_http_server, http_get, unique, wait_for

pytestmark = pytest.mark.cluster

# A 10-line HTTP server: serves files from /srv/www (a ConfigMap volume) and
# /whoami -> the pod name (downward API env).
WEB_SERVER = textwrap.dedent(
    """
    import http.server, os, functools
    class H(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/whoami":
                b = os.environ["POD_NAME"].encode()
                self.send_response(200); self.end_headers(); self.wfile.write(b); return
            super().do_GET()
    h = functools.partial(H, directory="/srv/www")
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), h).serve_forever()
    """
)


@pytest.fixture
def ns(cluster: Cluster) -> Any:
    core: Any = client.CoreV1Api(cluster.api_client())
    name = unique("e2e")
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def ready_pods(core: Any, ns: str, selector: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    out = []
    for p in pods:
        if p.metadata.deletion_timestamp:
            continue
        conds = {c.type: c.status for c in p.status.conditions or []}
        if conds.get("Ready") == "True":
            out.append(p)
    return out


def finished_pod(core: Any, ns: str, name: str, timeout: float = 60) -> Any:
    """The pod once its phase is Succeeded or Failed."""
    return wait_for(
        lambda: (
            (x := core.read_namespaced_pod(name, ns)).status.phase in ("Succeeded", "Failed") and x
        ),
        timeout=timeout,
        what=f"pod {name} to finish",
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_harness_start_time(cluster: Cluster) -> None:
    print(f"harness start time: {cluster.start_seconds:.1f}s")
    assert cluster.start_seconds < 60


def test_nodes_ready_with_gpu_capacity(cluster: Cluster) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    nodes = core.list_node(label_selector="infleet.dev/node-agent=true").items
    assert len(nodes) == cluster.nodes
    for n in nodes:
        assert n.status.allocatable["nvidia.com/gpu"] == str(cluster.gpus_per_node)
        conds = {c.type: c.status for c in n.status.conditions}
        assert conds["Ready"] == "True"
    lease: Any = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease(
        nodes[0].metadata.name, "kube-node-lease"
    )
    assert lease.spec.renew_time is not None


def test_deployment_service_configmap_scale_and_delete(cluster: Cluster, ns: str) -> None:
    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    disc: Any = client.DiscoveryV1Api(api)
    core.create_namespaced_config_map(
        ns,
        {"metadata": {"name": "web-content"}, "data": {"index.html": "hello from a configmap\n"}},
    )
    labels = {"app": "web"}
    deploy = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11",
                            "command": ["python", "-c", WEB_SERVER],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/index.html", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [
                                {"name": "content", "mountPath": "/srv/www", "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [{"name": "content", "configMap": {"name": "web-content"}}],
                },
            },
        },
    }
    apps.create_namespaced_deployment(ns, deploy)
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    pods = wait_for(
        lambda: (p := ready_pods(core, ns, "app=web")) and len(p) == 2 and p,
        timeout=60,
        what="2 ready web pods",
    )
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2, ips
    for p in pods:
        assert http_get(f"http://{p.status.pod_ip}:8080/index.html") == "hello from a configmap\n"
        assert http_get(f"http://{p.status.pod_ip}:8080/whoami") == p.metadata.name

    def slice_ips() -> set[str]:
        out: set[str] = set()
        for s in disc.list_namespaced_endpoint_slice(
            ns, label_selector="kubernetes.io/service-name=web"
        ).items:
            for ep in s.endpoints or []:
                if ep.conditions and ep.conditions.ready:
                    out.update(ep.addresses)
        return out

    wait_for(lambda: slice_ips() == ips, timeout=30, what="EndpointSlice with both pod IPs")

    # scale to 3: a third process starts
    apps.patch_namespaced_deployment_scale(ns and "web", ns, {"spec": {"replicas": 3}})
    pods = wait_for(
        lambda: (p := ready_pods(core, ns, "app=web")) and len(p) == 3 and p,
        timeout=60,
        what="3 ready web pods",
    )
    assert cluster.agent is not None
    procs = {k: v for k, v in cluster.agent.processes().items() if k.startswith(f"{ns}/")}
    assert len(procs) == 3, procs
    pids = [pid for v in procs.values() for pid in v]
    assert all(pid_alive(p) for p in pids)
    wait_for(lambda: len(slice_ips()) == 3, timeout=30, what="EndpointSlice with 3 IPs")

    # deleting the Deployment garbage-collects ReplicaSet and pods: all processes stop
    apps.delete_namespaced_deployment("web", ns)
    wait_for(
        lambda: not core.list_namespaced_pod(ns, label_selector="app=web").items,
        timeout=60,
        what="web pods deleted",
    )
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="processes gone")
    assert not apps.list_namespaced_replica_set(ns).items


def test_garbage_collection_of_dependents(cluster: Cluster, ns: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "dependent", "ownerReferences": [ref]}}
    )
    core.delete_namespaced_config_map("owner", ns)

    def gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", ns)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=60, what="dependent garbage-collected")


def test_pod_env_token_volumes_and_host_service(cluster: Cluster, ns: str) -> None:
    """A one-shot pod checks its environment, its SA token and reaches a host service."""
    core: Any = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}
    )
    script = textwrap.dedent(
        """
        import json, os, ssl, urllib.request
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        token = open(sa + "/token").read()
        assert open(sa + "/namespace").read() == os.environ["POD_NAMESPACE"]
        ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        req = urllib.request.Request(f"https://{host}:{port}/api",
                                     headers={"Authorization": "Bearer " + token})
        api = json.load(urllib.request.urlopen(req, context=ctx))
        host_reply = urllib.request.urlopen(os.environ["HOST_URL"]).read().decode()
        out = {"api": api["kind"], "host": host_reply, "env": {k: os.environ.get(k) for k in
               ("MODE", "PASSWORD", "POD_NAME", "POD_IP", "NODE", "CFG_mode", "GREETING")},
               "secret_file": open("/etc/sec/password").read(),
               "scratch": os.path.isdir("/scratch")}
        print("RESULT " + json.dumps(out), flush=True)
        """
    )
    with host_http_server(cluster.gateway) as url:
        pod = {
            "metadata": {"name": "checker"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "check",
                        "image": "docker.io/library/python:3.11-slim",
                        "command": ["python3", "-c", script],
                        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                        "env": [
                            {"name": "HOST_URL", "value": url},
                            {"name": "WHO", "value": "world"},
                            {"name": "GREETING", "value": "hello $(WHO)"},
                            {
                                "name": "MODE",
                                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}},
                            },
                            {
                                "name": "PASSWORD",
                                "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}},
                            },
                            {
                                "name": "POD_NAME",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            {
                                "name": "POD_IP",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                            },
                            {
                                "name": "NODE",
                                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                            },
                        ],
                        "volumeMounts": [
                            {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                            {"name": "scratch", "mountPath": "/scratch"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "sec", "secret": {"secretName": "sec"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            },
        }
        core.create_namespaced_pod(ns, pod)
        p = finished_pod(core, ns, "checker")
    assert cluster.run_dir is not None
    logs = list((cluster.run_dir / "pods").glob(f"{ns}_checker_*/logs/check.log"))
    text = logs[0].read_text()
    assert p.status.phase == "Succeeded", text
    result = json.loads(text.rsplit("RESULT ", 1)[1].splitlines()[0])
    assert result["api"] == "APIVersions"
    assert result["host"] == "hello from the host\n"
    assert result["secret_file"] == "s3cret"
    assert result["scratch"] is True
    env = result["env"]
    assert env["MODE"] == "fast" and env["CFG_mode"] == "fast" and env["PASSWORD"] == "s3cret"
    assert env["POD_NAME"] == "checker" and env["POD_IP"] == p.status.pod_ip
    assert env["NODE"] == p.spec.node_name and env["GREETING"] == "hello world"
    st = p.status.container_statuses[0]
    assert st.state.terminated.exit_code == 0


def test_crash_loop_restart_count_and_exit_code(cluster: Cluster, ns: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "crasher"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "python", "command": ["python", "-c", "exit(3)"]}
                ]
            },
        },
    )

    def crashed_twice() -> Any:
        st = core.read_namespaced_pod("crasher", ns).status
        cs = (st.container_statuses or [None])[0]
        return cs and cs.restart_count >= 1 and cs.last_state.terminated and cs

    cs = wait_for(crashed_twice, timeout=30, what="a restart")
    assert cs.last_state.terminated.exit_code == 3
    wait_for(
        lambda: (
            (s := core.read_namespaced_pod("crasher", ns).status.container_statuses[0])
            and s.state.waiting
            and s.state.waiting.reason == "CrashLoopBackOff"
        ),
        timeout=30,
        what="CrashLoopBackOff",
    )


def test_unmapped_image_and_gpu_overcommit_stay_pending(cluster: Cluster, ns: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "noimage"},
            "spec": {"containers": [{"name": "c", "image": "registry.example/unknown:1.0"}]},
        },
    )
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "greedy"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "python:3.11",
                        "resources": {"limits": {"nvidia.com/gpu": "64"}},
                    }
                ]
            },
        },
    )

    def waiting_reason() -> str | None:
        cs = core.read_namespaced_pod("noimage", ns).status.container_statuses
        return cs and cs[0].state.waiting and cs[0].state.waiting.reason

    wait_for(lambda: waiting_reason() == "ErrImagePull", timeout=30, what="ErrImagePull")
    wait_for(lambda: waiting_reason() == "ImagePullBackOff", timeout=30, what="ImagePullBackOff")
    assert core.read_namespaced_pod("noimage", ns).status.phase == "Pending"

    def unschedulable() -> Any:
        st = core.read_namespaced_pod("greedy", ns).status
        return next(
            (c for c in st.conditions or [] if c.type == "PodScheduled" and c.status == "False"),
            None,
        )

    cond = wait_for(unschedulable, timeout=30, what="greedy pod unschedulable")
    assert cond.reason == "Unschedulable"
    assert "nvidia.com/gpu" in cond.message


def test_graceful_delete_sends_sigterm(cluster: Cluster, ns: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    script = textwrap.dedent(
        """
        import signal, sys, time
        def term(*_):
            print("got SIGTERM", flush=True); sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        print("ready", flush=True)
        while True: time.sleep(0.1)
        """
    )
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "graceful"},
            "spec": {
                "terminationGracePeriodSeconds": 20,
                "containers": [
                    {"name": "c", "image": "python", "command": ["python", "-c", script]}
                ],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("graceful", ns).status.phase == "Running",
        timeout=30,
        what="Running",
    )
    assert cluster.run_dir is not None
    log = next((cluster.run_dir / "pods").glob(f"{ns}_graceful_*/logs/c.log"))
    wait_for(lambda: "ready" in log.read_text(), timeout=20, what="process up")
    core.delete_namespaced_pod("graceful", ns)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("graceful", ns)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=15, what="pod deleted well before its 20s grace period")
    assert "got SIGTERM" in log.read_text()


def test_kubectl_server_side_apply_and_helm(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    out = cluster.run_kubectl("version", "-o", "json")
    v = json.loads(out)
    assert v["serverVersion"]["gitVersion"] == v["clientVersion"]["gitVersion"]
    assert v["serverVersion"]["gitVersion"].startswith("v1.")
    manifest = textwrap.dedent(
        f"""
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: applied
          namespace: {ns}
        data:
          key: value
        """
    )
    cluster.run_kubectl("apply", "--server-side", "-f", "-", input=manifest)
    got = json.loads(
        cluster.run_kubectl(
            "get", "configmap", "applied", "-n", ns, "-o", "json", "--show-managed-fields"
        )
    )
    assert got["data"] == {"key": "value"}
    assert any(m["manager"] == "kubectl" for m in got["metadata"]["managedFields"])
    assert "infleet-node-0" in cluster.run_kubectl("get", "nodes")

    assert "v3." in cluster.run_helm("version", "--short")
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        'data:\n  greeting: {{ .Values.greeting | default "hi" | quote }}\n'
    )
    cluster.run_helm("install", "tiny", str(chart), "-n", ns, "--set", "greeting=hello", "--wait")
    got = json.loads(cluster.run_kubectl("get", "configmap", "tiny-cm", "-n", ns, "-o", "json"))
    assert got["data"] == {"greeting": "hello"}
    assert "tiny" in cluster.run_helm("list", "-n", ns, "-q")


def test_in_cluster_client_with_projected_token(cluster: Cluster, ns: str) -> None:
    """What an operator pod does: kubernetes' in-cluster config, RBAC via its ServiceAccount."""
    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    rbac: Any = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "reader-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )  # fmt: skip
    script = textwrap.dedent(
        """
        import os
        from kubernetes import client, config
        config.load_incluster_config()
        ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
        pods = client.CoreV1Api().list_namespaced_pod(ns).items
        print("PODS", sorted(p.metadata.name for p in pods), flush=True)
        try:
            client.CoreV1Api().list_namespaced_secret(ns)
        except client.ApiException as e:
            print("SECRETS", e.status, flush=True)
        """
    )
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "incluster"},
            "spec": {
                "serviceAccountName": "reader",
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "python:3.11",
                                "command": ["python", "-c", script]}],
            },
        },
    )  # fmt: skip
    p = finished_pod(core, ns, "incluster")
    assert cluster.run_dir is not None
    log = next((cluster.run_dir / "pods").glob(f"{ns}_incluster_*/logs/c.log")).read_text()
    assert p.status.phase == "Succeeded", log
    assert "PODS ['incluster']" in log
    assert "SECRETS 403" in log  # the view role may not read secrets: RBAC is real


def test_init_container_emptydir_and_liveness_restart(cluster: Cluster, ns: str) -> None:
    core: Any = client.CoreV1Api(cluster.api_client())
    # Not /work: pods run this checkout's venv, and a checkout under /work (as in the
    # development sandbox) would be hidden by a volume mounted there.
    main = "import time; print(open('/scratch/msg').read(), flush=True); time.sleep(3600)"
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "initlive"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "initContainers": [
                    {
                        "name": "prep",
                        "image": "python:3.11",
                        "command": ["python", "-c", "open('/scratch/msg','w').write('prepared')"],
                        "volumeMounts": [{"name": "work", "mountPath": "/scratch"}],
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.11",
                        "command": ["python", "-c", main],
                        "volumeMounts": [{"name": "work", "mountPath": "/scratch"}],
                        "livenessProbe": {
                            "exec": {"command": ["test", "-f", "/scratch/alive"]},
                            "initialDelaySeconds": 2,
                            "periodSeconds": 1,
                            "failureThreshold": 1,
                        },
                    }
                ],
                "volumes": [{"name": "work", "emptyDir": {}}],
            },
        },
    )

    def restarted() -> Any:
        st = core.read_namespaced_pod("initlive", ns).status
        cs = (st.container_statuses or [None])[0]
        return cs and cs.restart_count >= 1 and st

    st = wait_for(restarted, timeout=60, what="liveness restart")
    assert st.init_container_statuses[0].state.terminated.exit_code == 0
    assert {c.type: c.status for c in st.conditions}["Initialized"] == "True"
    assert cluster.run_dir is not None
    log = next((cluster.run_dir / "pods").glob(f"{ns}_initlive_*/logs/main.log")).read_text()
    assert "prepared" in log


def test_worker_image_maps_to_the_venv(cluster: Cluster, ns: str) -> None:
    """`*/infleet-worker` images run from this checkout's venv (command overrides)."""
    core: Any = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "worker-image"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "c",
                        "image": "ghcr.io/infleet/infleet-worker:dev",
                        "command": [
                            "python",
                            "-c",
                            "import infleet_worker, sys; print(sys.prefix)",
                        ],
                    }
                ],
            },
        },
    )
    p = finished_pod(core, ns, "worker-image")
    assert cluster.run_dir is not None
    log = next((cluster.run_dir / "pods").glob(f"{ns}_worker-image_*/logs/c.log")).read_text()
    assert p.status.phase == "Succeeded", log
