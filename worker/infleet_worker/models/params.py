"""Reading a model's string ``parameters`` with clear errors."""

from __future__ import annotations


def int_param(params: dict[str, str], key: str, default: int, minimum: int = 1) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"parameter {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"parameter {key}={value} must be >= {minimum}")
    return value


def float_param(params: dict[str, str], key: str, default: float, minimum: float = 0.0) -> float:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"parameter {key}={raw!r} is not a number") from None
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f"parameter {key}={value} must be >= {minimum}")
    return value


def check_known(params: dict[str, str], known: set[str], model: str) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{model}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
