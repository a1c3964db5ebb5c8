"""Value-domain checks: a request's values against its signature, before batching.

``check_inputs`` runs once per request in the service (after shapes and datatypes) and
refuses a value outside its input's :class:`~infleet_worker.engine.base.Domain` with a
400 / INVALID_ARGUMENT naming the input, the rule and the first offending position, so
one client's bad token id never reaches a batch it shares with others.
``nonfinite_rows`` tells the batcher which rows of a computed batch hold NaN/Inf in an
output declared finite (that row's request fails; its batch-mates do not).

Every check is one vectorised reduction over the tensor (min/max, isfinite); the
position is looked for only when the reduction says something is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from infleet_worker.engine.base import Domain, TensorInfo, format_values
from infleet_worker.protocol.errors import invalid
from infleet_worker.tensors import Tensor

# Model-config parameter key of a tensor's domain: "domain.input_ids".
DOMAIN_PARAMETER_PREFIX = "domain."


def check_inputs(inputs: Mapping[str, Tensor], infos: Mapping[str, TensorInfo]) -> None:
    """Raise InferError (INVALID) at the first input value outside its declared domain."""
    for name, tensor in inputs.items():
        info = infos.get(name)
        if info is None or info.domain is None:
            continue
        problem = violation(tensor, info.domain)
        if problem is not None:
            raise invalid(f"input '{name}': {problem}")


def nonfinite_rows(
    outputs: Mapping[str, Tensor], infos: Mapping[str, TensorInfo]
) -> dict[int, str]:
    """Row index -> message naming the output, for rows with NaN/Inf where finite is declared.

    A row that fails in several outputs is reported for the first (signature order of
    ``infos``).
    """
    rows: dict[int, str] = {}
    for name, info in infos.items():
        tensor = outputs.get(name)
        if tensor is None or info.domain is None or not info.domain.finite:
            continue
        values = as_float(tensor)
        if values is None:
            continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        for position in np.argwhere(bad):
            row = int(position[0])
            if row in rows:
                continue
            value = values[tuple(position)]
            at = _index(position[1:])
            rows[row] = f"output '{name}' is not finite: {value} at {at} of the row"
    return dict(sorted(rows.items()))


def domain_json(domain: Domain) -> str:
    """The compact JSON of a domain's wire form, e.g. ``{"min":0,"max":30521}``."""
    return json.dumps(domain.to_wire(), separators=(",", ":"))


def domain_metadata(info: TensorInfo) -> dict[str, Any]:
    """Extra keys of a model-metadata tensor: ``{"parameters": {"domain": "<json>"}}``."""
    if info.domain is None:
        return {}
    return {"parameters": {"domain": domain_json(info.domain)}}


def domain_parameters(infos: Iterable[TensorInfo]) -> dict[str, dict[str, str]]:
    """Model-config ``parameters`` entries: ``domain.<tensor>`` -> ``{"string_value": json}``."""
    return {
        f"{DOMAIN_PARAMETER_PREFIX}{info.name}": {"string_value": domain_json(info.domain)}
        for info in infos
        if info.domain is not None
    }


def violation(tensor: Tensor, domain: Domain) -> str | None:
    """The first rule ``tensor`` breaks, in words with the position, or None."""
    if tensor.datatype == "BYTES":
        return _bytes_violation(tensor.array, domain)
    values = as_float(tensor)
    array = tensor.array if values is None else values
    if array.size == 0:
        return None
    if domain.finite and values is not None:
        bad = ~np.isfinite(values)
        if bad.any():
            return _at(array, bad, "is not finite")
    if domain.min is not None or domain.max is not None:
        # One reduction each: a request within bounds costs two passes over its values.
        lo, hi = array.min(), array.max()
        low_bad = domain.min is not None and lo < domain.min
        high_bad = domain.max is not None and hi > domain.max
        if low_bad or high_bad:
            bad = np.zeros(array.shape, dtype=bool)
            if domain.min is not None:
                bad |= array < domain.min
            if domain.max is not None:
                bad |= array > domain.max
            return _at(array, bad, f"is outside {_bounds(domain)}")
    if domain.values is not None:
        bad = _outside_set(array, domain.values)
        if bad is not None:
            return _at(array, bad, f"is not one of {format_values(domain.values)}")
    return None


def as_float(tensor: Tensor) -> np.ndarray | None:
    """Float values of a floating-point tensor (BF16 bits widened to float32), else None."""
    if tensor.datatype == "BF16":
        bits = np.ascontiguousarray(tensor.array, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if tensor.datatype in ("FP16", "FP32", "FP64"):
        return tensor.array
    return None


def _outside_set(array: np.ndarray, allowed: frozenset[float]) -> np.ndarray | None:
    """Mask of elements not in ``allowed``, or None when all are in it."""
    ordered = sorted(allowed)
    integer_run = all(float(v).is_integer() for v in ordered) and (
        ordered[-1] - ordered[0] == len(ordered) - 1
    )
    if integer_run and np.issubdtype(array.dtype, np.integer):
        # {0, 1}, {0, 1, 2}, ...: inside the run's bounds is inside the set (two reductions).
        if array.min() >= ordered[0] and array.max() <= ordered[-1]:
            return None
        return (array < ordered[0]) | (array > ordered[-1])
    bad = ~np.isin(array, np.asarray(ordered, dtype=np.float64))
    return bad if bad.any() else None


def _bytes_violation(array: np.ndarray, domain: Domain) -> str | None:
    if domain.max_bytes is None or array.size == 0:
        return None
    lengths = np.fromiter((len(x) for x in array.flat), dtype=np.int64, count=array.size)
    over = lengths > domain.max_bytes
    if not over.any():
        return None
    first = int(np.argmax(over))
    at = _index(np.unravel_index(first, array.shape))
    return f"element at {at} is {int(lengths[first])} bytes, more than maxBytes {domain.max_bytes}"


def _at(array: np.ndarray, bad: np.ndarray, rule: str) -> str:
    """'value V at [i, j] <rule>' for the first True of ``bad`` (row-major order)."""
    first = int(np.argmax(bad.reshape(-1)))
    position = np.unravel_index(first, array.shape)
    value = array.reshape(-1)[first]
    return f"value {_show(value)} at {_index(position)} {rule}"


def _show(value: object) -> str:
    if isinstance(value, int | np.integer):
        return str(int(value))
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else str(number)


def _bounds(domain: Domain) -> str:
    lo = "-inf" if domain.min is None else _show(domain.min)
    hi = "inf" if domain.max is None else _show(domain.max)
    return f"[{lo}, {hi}]"


def _index(position: object) -> str:
    return "[" + ", ".join(str(int(p)) for p in position) + "]"  # type: ignore[attr-defined]


__all__ = [
    "DOMAIN_PARAMETER_PREFIX",
    "as_float",
    "check_inputs",
    "domain_metadata",
    "domain_parameters",
    "nonfinite_rows",
    "violation",
]
