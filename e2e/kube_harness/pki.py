"""Certificates and kubeconfigs for the test cluster, made with the openssl CLI.

All keys are ECDSA P-256 (fast to generate; every component accepts them).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-new", "-nodes", *CURVE,
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=infleet-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=d,
    )  # fmt: skip
    return d / "ca.crt", d / "ca.key"


def make_cert(
    d: Path,
    name: str,
    cn: str,
    org: str | None = None,
    *,
    server: bool = False,
    client: bool = True,
    ips: list[str] | None = None,
    dns: list[str] | None = None,
) -> tuple[Path, Path]:
    """Issue ``name.crt``/``name.key`` signed by ``d/ca.crt``."""
    subj = (f"/O={org}" if org else "") + f"/CN={cn}"
    _openssl(
        "req", "-new", "-nodes", *CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", subj, cwd=d,
    )  # fmt: skip
    usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=" + ",".join(usages),
    ]
    sans = [f"IP:{i}" for i in ips or []] + [f"DNS:{n}" for n in dns or []]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "365", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.crt", d / f"{name}.key"


def make_sa_keys(d: Path) -> tuple[Path, Path]:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    return d / "sa.key", d / "sa.pub"


def _b64(p: Path) -> str:
    return base64.b64encode(p.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path, key: Path, user: str, context: str = "infleet"
) -> Path:
    """A self-contained kubeconfig (certificates embedded)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert),
                    "client-key-data": _b64(key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path
