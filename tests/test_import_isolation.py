"""The operator starts without torch; the worker's config imports no Kubernetes code."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(import_line: str) -> set[str]:
    code = f"import sys; {import_line}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_operator_does_not_import_torch() -> None:
    mods = _loaded_after(
        "import infleet_operator, infleet_operator.api, infleet_operator.crd, infleet_operator.cli"
    )
    assert "torch" not in mods


def test_worker_config_imports_no_kubernetes() -> None:
    mods = _loaded_after("import infleet_worker.config")
    assert not mods & {"kubernetes", "kopf", "torch"}
