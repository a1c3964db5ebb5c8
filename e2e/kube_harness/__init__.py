"""A real Kubernetes control plane for infleet's tests and demo.

- :mod:`kube_harness.build`: builds etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler, kubectl and helm from the Go module proxy (cached).
- :mod:`kube_harness.cluster`: certificates, bridge network, and the control plane
  processes.
- :mod:`kube_harness.nodeagent`: a kubelet stand-in that runs pods as local
  processes in their own network and mount namespaces (a package split by job).
- :mod:`kube_harness.cli`: ``up`` / ``down`` for people (``make cluster-up``).
"""
