"""A kubelet stand-in: registers nodes and runs their pods as local processes.

What it does, per node it owns:

- registers the Node with cpu/memory/pods/``nvidia.com/gpu`` capacity, keeps it
  Ready (conditions + a Lease in ``kube-node-lease`` renewed every 10 s);
- watches pods bound to it and runs each container's command as a local
  process: own network namespace (veth on the cluster bridge, IP from the pod
  CIDR), own mount+UTS namespace (``unshare``) where ConfigMap, Secret,
  emptyDir, downwardAPI, hostPath and projected (ServiceAccount token) volumes
  are bind-mounted at their ``mountPath``;
- env: literal, ``$(VAR)`` expansion, fieldRef/resourceFieldRef, ConfigMap and
  Secret refs, envFrom; ``KUBERNETES_SERVICE_HOST``/``PORT`` point at the API
  server's gateway address (a real kubelet points at the ``kubernetes``
  Service's ClusterIP, which nothing routes here);
- httpGet/tcpSocket/exec startup/readiness/liveness probes, restartPolicy with
  back-off (CrashLoopBackOff), init containers, preStop exec/sleep/httpGet,
  graceful deletion (SIGTERM to the process group, SIGKILL after the grace
  period, then the pod object is deleted with grace 0);
- pulls no images: see :func:`.containers.map_image` (and e2e/README.md).

The package, split by job as kwok splits its controllers:

- :mod:`.agent`: the nodes' pod watch, one :class:`~.pod.PodWorker` per pod;
- :mod:`.node`: Node objects and their Leases (register, heartbeat);
- :mod:`.pod`: one pod's life (set-up, status, deletion), given a frozen
  :class:`~.context.NodeContext` and its own API client;
- :mod:`.supervise`: init containers in order, restartPolicy, back-off, probe kills;
- :mod:`.podstatus`: phase and status from the containers' states;
- :mod:`.containers`: image mapping, processes, exit codes and back-off;
- :mod:`.volumes`, :mod:`.env`, :mod:`.probes`: what their names say;
- :mod:`.mounts`, :mod:`.host`: host mountpoints and helpers they all share.
"""

from kube_harness.nodeagent.agent import NodeAgent
from kube_harness.nodeagent.mounts import MountPoints

__all__ = ["MountPoints", "NodeAgent"]
