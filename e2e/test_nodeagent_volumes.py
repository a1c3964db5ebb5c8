"""kube_harness.nodeagent.volumes: volume files and the bind-mount script of a container."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.mounts import MountPoints
from kube_harness.nodeagent.volumes import PodVolumes


def pod(tmp_path: Path) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
        "spec": {
            "containers": [{"name": "main"}],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": str(tmp_path / "host" / "dir")}},
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                            {
                                "path": "ip",
                                "fieldRef": {"fieldPath": "status.podIP"},
                                "mode": 0o600,
                            },
                        ]
                    },
                },
            ],
        },
    }


def volumes(tmp_path: Path) -> PodVolumes:
    node = NodeContext(
        run_dir=tmp_path / "run",
        host_ip="10.9.0.1",
        api_port=6443,
        cpu="8",
        memory="32Gi",
        venv=Path("/venv"),
        backoff_base=10,
        backoff_max=300,
        network=cast(Any, None),  # no pod network: only volumes here
        mounts=MountPoints(tmp_path / "mountstate"),
    )
    return PodVolumes(node, None, tmp_path / "run" / "pod", "1:u")  # no API-backed volumes


def test_downward_and_empty_dir_files(tmp_path: Path) -> None:
    v = volumes(tmp_path)
    v.write(pod(tmp_path), "10.9.0.7")
    info = v.volume_dir("info")
    assert (info / "name").read_text() == "p"
    assert (info / "ip").read_text() == "10.9.0.7" and (info / "ip").stat().st_mode & 0o777 == 0o600
    assert v.volume_dir("scratch").is_dir() and not any(v.volume_dir("scratch").iterdir())


def test_mount_script(tmp_path: Path) -> None:
    v = volumes(tmp_path)
    p = pod(tmp_path)
    target = tmp_path / "mnt" / "info"
    c = Container(
        {
            "name": "main",
            "workingDir": "/work dir",
            "volumeMounts": [
                {"name": "info", "mountPath": str(target), "readOnly": True},
                {"name": "scratch", "mountPath": str(tmp_path)},  # hides the pod's run dir
                {"name": "host", "mountPath": str(tmp_path / "mnt" / "host"), "subPath": "sub"},
                {"name": "undeclared", "mountPath": "/nowhere"},
            ],
        },
        False,
        tmp_path / "main.log",
    )
    v.write(p, "10.9.0.7")
    script = v.mount_script(p, c, "my-host").read_text().splitlines()
    assert script[:2] == ["set -e", "hostname my-host 2>/dev/null || true"]
    binds = [line for line in script if line.startswith("mount --bind")]
    assert binds[0] == f"mount --bind {v.volume_dir('info')} {target}"
    assert binds[-1].endswith(f" {tmp_path}")  # the mount over the run dir goes last
    assert f"mount -o remount,bind,ro {target}" in script
    assert (tmp_path / "host" / "dir" / "sub").is_dir()  # DirectoryOrCreate, with subPath
    assert target.is_dir()  # the mountpoint was made on the host
    assert not any("/nowhere" in line for line in script)
    assert script[-2:] == ["mkdir -p '/work dir' && cd '/work dir'", 'exec "$@"']
