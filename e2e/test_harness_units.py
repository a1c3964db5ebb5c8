"""Fast checks of the harness's build parts (no cluster); the node agent's have their
own files, test_nodeagent_<module>.py."""

from __future__ import annotations

from kube_harness.build import TOOLS


def test_kubernetes_gomod_replaces_every_staging_module() -> None:
    """The generated go.mod pins each staging module to the release's v0 tag."""
    k8s = TOOLS[0]
    text = k8s.gomod().read_text()
    version = k8s.version()
    staging = "v0." + version.removeprefix("v1.")
    replaces = [line.split() for line in text.splitlines() if "=>" in line]
    assert len(replaces) >= 30
    for r in replaces:
        assert r[0] == r[2] and r[0].startswith("k8s.io/") and r[3] == staging, r
    assert "tool (" in text and "k8s.io/kubernetes/cmd/kube-apiserver" in text
