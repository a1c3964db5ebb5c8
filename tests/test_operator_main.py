"""Entry point settings, kopf configuration and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import kopf
import pytest

from infleet_operator import kopf_settings, main


def test_defaults_serve_all_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("INFLEET_NAMESPACES", "INFLEET_ALL_NAMESPACES", "INFLEET_STANDALONE"):
        monkeypatch.delenv(var, raising=False)
    cfg, kubeconfig = main.parse_args([])
    assert cfg.all_namespaces and cfg.namespaces == []
    assert cfg.health_port == 8080 and cfg.metrics_port == 8081
    assert cfg.peering_name == "infleet-operator" and not cfg.standalone
    assert kubeconfig is None


def test_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLEET_NAMESPACES", "a, b")
    monkeypatch.setenv("INFLEET_PEERING_PRIORITY", "7")
    monkeypatch.setenv("INFLEET_LOG_FORMAT", "json")
    cfg, _ = main.parse_args([])
    assert cfg.namespaces == ["a", "b"] and not cfg.all_namespaces
    assert cfg.priority == 7 and cfg.effective_priority() == 7 and cfg.log_format == "json"
    cfg, kc = main.parse_args(["-n", "x", "--standalone", "--kubeconfig", "/k", "--priority", "3"])
    assert cfg.namespaces == ["x"] and cfg.standalone and kc == "/k" and cfg.priority == 3
    with pytest.raises(SystemExit):
        main.parse_args(["-n", "x", "-A"])


def test_priorities_differ_per_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    a = kopf_settings.priority_from("infleet-operator-7d9f-abcde")
    b = kopf_settings.priority_from("infleet-operator-7d9f-fghij")
    assert a != b and 0 < a < 2**31 and 0 < b < 2**31
    monkeypatch.setenv("POD_NAME", "infleet-operator-7d9f-abcde")
    assert kopf_settings.OperatorConfig().effective_priority() == a


def test_kopf_settings() -> None:
    settings = kopf.OperatorSettings()
    kopf_settings.configure(settings, kopf_settings.OperatorConfig(priority=5))
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "infleet.dev"
    assert settings.peering.priority == 5 and settings.peering.clusterwide
    assert settings.peering.mandatory and not settings.peering.standalone
    assert settings.scanning.disabled


def test_no_handler_needs_a_finalizer() -> None:
    """The handlers module alone: no delete handler, nothing needing a finalizer, no
    daemon or timer (the autoscaler's timer is its own module; kopf gives it one). In a
    fresh interpreter: a test that imported the timer module before this one would
    have registered it in kopf's default registry."""
    code = (
        "import kopf\n"
        "from infleet_operator import handlers\n"
        "reg = kopf.get_default_registry()\n"
        "for h in reg._changing.get_all_handlers():\n"
        "    assert not h.requires_finalizer, h.id\n"
        "    assert h.reason != 'delete', h.id\n"
        "assert not list(reg._spawning.get_all_handlers())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_operator_imports_no_torch() -> None:
    code = (
        "import sys, infleet_operator.main, infleet_operator.handlers; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kubeconfig_flag_reaches_the_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression: --kubeconfig was ignored because kubernetes read $KUBECONFIG at import."""
    import subprocess
    import sys

    kc = tmp_path / "kc.yaml"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://10.211.99.1:6443', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t0k3n}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    code = (
        "import os, sys; os.environ.pop('KUBECONFIG', None)\n"
        "import infleet_operator.main as m\n"
        f"m.use_kubeconfig({str(kc)!r})\n"
        "from infleet_operator.kube import load_credentials\n"
        "c = load_credentials(); print(c.server, c.token)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in __import__("os").environ.items() if k != "KUBECONFIG"},
    )
    assert out.stdout.split() == ["https://10.211.99.1:6443", "t0k3n"]
