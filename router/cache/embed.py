"""Embedders of the semantic cache: texts -> unit vectors (float32, one row per text).

- :class:`WordLlamaEmbedder`, the offline default: the ``wordllama`` package's 256-dimension
  static model (``l2_supercat``), shipped inside its wheel (MIT). Its loader looks for the
  files in a cache folder and then tries to download them, so the package's own directory is
  passed as ``cache_dir`` with ``disable_download=True``: nothing is fetched. Free; about
  20,000 short texts a second on one core.
- :class:`EndpointEmbedder`: any OpenAI-compatible ``POST /embeddings`` endpoint of the
  provider registry (a catalog model, e.g. ``text-embedding-3-small``, 1536 dimensions), its
  spend priced from the catalog's ``embedding_input_usd_per_mtok`` (else its input price).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from router.pricing import Usage, cost_nusd
from router.providers.base import Provider, ProviderError


@dataclass(frozen=True, slots=True)
class Embedded:
    """Unit vectors (``vectors``: float32, shape ``(len(texts), dim)``), the input tokens the
    embedder counted and their cost (nano-USD; 0 offline; None: unpriced)."""

    vectors: np.ndarray[Any, np.dtype[np.float32]]
    tokens: int
    cost_nusd: int | None


class Embedder(Protocol):
    """``name`` (recorded with each entry: vectors of two embedders never meet) and ``dim``."""

    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """Embed ``texts``. Raises :class:`ProviderError` when a remote embedder fails."""
        ...


def unit_rows(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Each row scaled to length 1 (a zero row stays zero), as float32."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: np.ndarray[Any, np.dtype[np.float32]] = (matrix / norms).astype(np.float32)
    return unit


class WordLlamaEmbedder:
    """wordllama's ``l2_supercat`` model at 256 dimensions, loaded from its wheel (offline)."""

    name = "wordllama/l2_supercat-256"
    dim = 256

    def __init__(self) -> None:
        import wordllama  # type: ignore[import-untyped]
        from wordllama import WordLlama

        self._model = WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=self.dim
        )

    def embed_now(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Embed synchronously (CPU, about 50 microseconds a short text)."""
        return unit_rows(self._model.embed(list(texts), norm=False))

    async def embed(self, texts: Sequence[str]) -> Embedded:
        vectors = self.embed_now(texts)
        tokens = sum(len(t.split()) for t in texts)
        return Embedded(vectors, tokens, 0)


@dataclass(frozen=True, slots=True)
class EmbeddingPrice:
    """The input price of an embedding model (USD per 1M tokens), for :func:`cost_nusd`."""

    input_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None
    output_usd_per_mtok: Decimal = Decimal(0)


class EndpointEmbedder:
    """An OpenAI-compatible embeddings endpoint reached through the provider registry.

    Args:
        model: the catalog name of the embedding model.
        upstream: catalog model -> (adapter, model id to send): the gateway's registry.
        dim: the model's output dimension (1536 for text-embedding-3-small).
        price: the model's price now (None: unpriced, spend booked as NULL).
    """

    def __init__(
        self,
        model: str,
        upstream: Callable[[str], tuple[Provider, str]],
        *,
        dim: int,
        price: Callable[[], EmbeddingPrice | None],
    ) -> None:
        self.name = model
        self.dim = dim
        self._upstream = upstream
        self._price = price

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """Embed ``texts`` in one call (OpenAI API reference, "Create embeddings": ``data``
        items with ``index`` and ``embedding``, ``usage.prompt_tokens``).

        Raises:
            ProviderError: the call failed (the adapter's errors), or the reply cannot be read:
                a count of vectors other than of texts, an item without a numeric vector, a
                dimension other than ``dim``, a non-finite value or a bad token count (so the
                cache stage bypasses the cache instead of failing the caller's request).
        """
        adapter, api_model = self._upstream(self.name)
        reply = await adapter.embeddings({"model": api_model, "input": list(texts)})
        try:
            data = sorted(reply.get("data") or [], key=lambda d: int(d.get("index", 0)))
            if len(data) != len(texts):
                raise ProviderError(
                    f"{self.name}: {len(data)} embeddings for {len(texts)} inputs", transient=True
                )
            raw = np.array([d["embedding"] for d in data], dtype=np.float32)
            usage = reply.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or 0)
        except ProviderError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                f"{self.name}: an embeddings reply that cannot be read: {exc!r}", transient=True
            ) from exc
        if raw.ndim != 2 or raw.shape[1] != self.dim:
            got = raw.shape[1] if raw.ndim == 2 else "no"
            raise ProviderError(
                f"{self.name}: {got} dimensions, configured {self.dim}", transient=False
            )
        if not np.isfinite(raw).all() or tokens < 0:
            raise ProviderError(
                f"{self.name}: an embeddings reply with a non-finite value or negative usage",
                transient=True,
            )
        vectors = unit_rows(raw)
        price = self._price()
        cost = cost_nusd(Usage(input_tokens=tokens), price) if price is not None else None
        await asyncio.sleep(0)
        return Embedded(vectors, tokens, cost)
