"""Names, labels and annotations of the children an InferenceDeployment owns."""

from __future__ import annotations

import hashlib

from infleet_operator import api

FIELD_MANAGER = "infleet-operator"
# The replica count's owner while autoscaling is on (the autoscaler timer applies
# ``spec.replicas`` of the worker Deployment under this manager; the reconcile never does).
AUTOSCALER_MANAGER = "infleet-autoscaler"

APP = "infleet-worker"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = f"{api.GROUP}/deployment"

CONFIG_HASH = f"{api.GROUP}/config-hash"
CONFIG_FILE = "worker.json"
CONFIG_DIR = "/etc/infleet"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"

# kopf bookkeeping lives in annotations under this prefix (never in status).
KOPF_PREFIX = api.GROUP

_DNS_LABEL_MAX = 63


def _short(value: str, limit: int) -> str:
    """``value`` if it fits, else a prefix plus a stable hash (still a valid DNS label)."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: limit - 9].rstrip('-.')}-{digest}"


def label_value(name: str) -> str:
    """Object names go up to 253 characters, label values to 63."""
    return _short(name, _DNS_LABEL_MAX)


def selector_labels(name: str) -> dict[str, str]:
    """The Deployment/Service/PDB selector: immutable once created, keep it minimal."""
    return {LABEL_NAME: APP, LABEL_INSTANCE: label_value(name)}


def labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_DEPLOYMENT: label_value(name),
    }


def selector_string(name: str) -> str:
    """The selector as a string, for the scale subresource (``status.selector``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def deployment_name(name: str) -> str:
    return _short(name, 253)


def config_map_name(name: str) -> str:
    return _short(f"{name}-config", 253)


def _dns1035(name: str) -> str:
    """Service names are DNS-1035 labels: no dots, a letter first."""
    name = name.replace(".", "-")
    return name if name[:1].isalpha() else f"infd-{name}"


def service_name(name: str) -> str:
    return _short(_dns1035(name), _DNS_LABEL_MAX)


def headless_service_name(name: str) -> str:
    return _short(f"{_dns1035(name)}-headless", _DNS_LABEL_MAX)


def pdb_name(name: str) -> str:
    return _short(name, 253)
