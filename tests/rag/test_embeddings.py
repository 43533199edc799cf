"""Embedders: normalised float32 vectors off the loop, and a cache that embeds text once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aillm_lab.db import LabDB
from aillm_lab.llm.base import Model
from aillm_lab.rag.embeddings import (
    CACHE_SCHEMA,
    EmbeddingCache,
    EmbeddingError,
    HashingEmbedder,
    LocalEmbedder,
    ModelEmbedder,
    default_embedder,
    normalise,
)

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return default_embedder()


def _unit(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5))


def test_local_embedder_returns_unit_float32_rows_of_its_dim(minilm: LocalEmbedder) -> None:
    vectors = asyncio.run(minilm.aembed(["a cat sat on the mat", "stock prices fell", "x"]))
    assert vectors.shape == (3, minilm.dim) == (3, 384)
    assert vectors.dtype == np.float32 and _unit(vectors)


def test_local_embedder_places_paraphrases_closer_than_unrelated_text(
        minilm: LocalEmbedder) -> None:
    cat, kitten, tax = asyncio.run(minilm.aembed(
        ["The cat is sleeping on the sofa.", "A kitten naps on the couch.",
         "Quarterly tax filings are due in April."]))
    assert float(cat @ kitten) > float(cat @ tax) + 0.3


def test_local_embedder_encodes_in_a_worker_thread(minilm: LocalEmbedder,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = minilm.embed_blocking

    def spy(texts: list[str]) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return original(texts)

    monkeypatch.setattr(minilm, "embed_blocking", spy)

    async def main() -> str:
        await minilm.aembed(["hello"])
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert seen and seen[0] != loop_thread


def test_local_model_loads_once_per_process(minilm: LocalEmbedder) -> None:
    assert minilm.model() is LocalEmbedder().model()
    assert default_embedder() is minilm


def test_local_token_count_is_not_truncated_at_the_tokenizer_files_128(
        minilm: LocalEmbedder) -> None:
    assert minilm.count_tokens("word " * 300) == 300
    assert minilm.count_tokens("") == 0


def test_empty_input_gives_an_empty_matrix(minilm: LocalEmbedder) -> None:
    assert asyncio.run(minilm.aembed([])).shape == (0, 384)


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    from aillm_lab.errors import ModelNotAvailable

    with pytest.raises(ModelNotAvailable, match="tokenizer.json"):
        LocalEmbedder(tmp_path)


def test_hashing_embedder_is_deterministic_and_word_sensitive() -> None:
    emb = HashingEmbedder(dim=128)
    a1, a2, b, c = asyncio.run(emb.aembed(["red apples and pears", "red apples and pears",
                                           "red apples", "blue submarine engines"]))
    assert np.array_equal(a1, a2) and _unit(np.stack([a1, b, c]))
    assert float(a1 @ b) > float(a1 @ c)
    assert emb.calls == 4 and emb.model_id == "hashing-128"


def test_hashing_embedder_rejects_a_tiny_dim() -> None:
    with pytest.raises(EmbeddingError, match="dim=1"):
        HashingEmbedder(dim=1)


class _VectorModel(Model):
    provider = "fake"

    def __init__(self, dim: int = 3, short: bool = False) -> None:
        super().__init__("embedder")
        self.dim, self.short, self.batches = dim, short, []

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        out = [[float(len(t)), 1.0] + [0.0] * (self.dim - 2) for t in texts]
        return out[:-1] if self.short else out


def test_model_embedder_normalises_batches_and_learns_the_dim() -> None:
    model = _VectorModel(dim=4)
    emb = ModelEmbedder(model, batch_size=2)
    vectors = asyncio.run(emb.aembed(["a", "bb", "ccc"]))
    assert emb.dim == 4 and vectors.shape == (3, 4) and _unit(vectors)
    assert model.batches == [2, 1]
    assert emb.model_id == "fake:embedder"
    assert emb.count_tokens("two words") >= 2


def test_model_embedder_refuses_a_short_answer() -> None:
    with pytest.raises(EmbeddingError, match="2 vectors for 3 texts"):
        asyncio.run(ModelEmbedder(_VectorModel(short=True)).aembed(["a", "b", "c"]))


def test_normalise_checks_the_dimension() -> None:
    with pytest.raises(EmbeddingError, match=r"expected \(n, 5\)"):
        normalise(np.ones((2, 3)), 5)
    assert np.array_equal(normalise(np.zeros((1, 3)), 3), np.zeros((1, 3), np.float32))


def test_cache_embeds_identical_text_only_once(tmp_path: Path) -> None:
    emb = HashingEmbedder(dim=16)

    async def main() -> tuple[np.ndarray, np.ndarray, int, int]:
        db = LabDB(tmp_path / "lab.db", schema=CACHE_SCHEMA)
        cache = EmbeddingCache(db)
        try:
            first, n1 = await cache.aembed(emb, ["alpha", "beta", "alpha"])
            second, n2 = await cache.aembed(emb, ["beta", "alpha", "gamma"])
        finally:
            await db.aclose()
        return first, second, n1, n2

    first, second, n1, n2 = asyncio.run(main())
    assert (n1, n2) == (2, 1)
    assert emb.calls == 3
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[0], second[1])
    assert second.dtype == np.float32 and second.shape == (3, 16)


def test_cache_keys_include_the_model_id(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        db = LabDB(tmp_path / "lab.db", schema=CACHE_SCHEMA)
        cache = EmbeddingCache(db)
        try:
            _, a = await cache.aembed(HashingEmbedder(dim=16), ["same text"])
            _, b = await cache.aembed(HashingEmbedder(dim=32), ["same text"])
            await cache.aclear()
            _, c = await cache.aembed(HashingEmbedder(dim=16), ["same text"])
        finally:
            await db.aclose()
        return a, b + c

    assert asyncio.run(main()) == (1, 2)


def test_cache_embeds_missing_texts_in_length_sorted_batches_with_progress(
        tmp_path: Path) -> None:
    batches: list[list[str]] = []

    class Spy(HashingEmbedder):
        async def aembed(self, texts: list[str]) -> np.ndarray:
            batches.append(list(texts))
            return await super().aembed(texts)

    ticks: list[int] = []
    texts = ["ccc ccc ccc", "a", "bb bb", "a", "dddd dddd dddd dddd", "ee"]

    async def main() -> int:
        db = LabDB(tmp_path / "lab.db", schema=CACHE_SCHEMA)
        try:
            _, computed = await EmbeddingCache(db).aembed(Spy(dim=8), texts, batch_size=2,
                                                          progress=ticks.append)
        finally:
            await db.aclose()
        return computed

    assert asyncio.run(main()) == 5
    assert batches == [["a", "ee"], ["bb bb", "ccc ccc ccc"], ["dddd dddd dddd dddd"]]
    assert sum(ticks) == len(texts)
