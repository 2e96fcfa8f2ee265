"""Prompt compression: model-free compressors (:mod:`.compressors`), the extraction guard
(:mod:`.guard`), a chat request's context compressed with its protected parts left whole
(:mod:`.compress`), and the gateway stage (:mod:`.stage`)."""

from router.compression.compress import (
    Compressed,
    MessagesCompressed,
    compress_messages,
    compress_text,
)
from router.compression.compressors import COMPRESSORS, Options, register

__all__ = [
    "COMPRESSORS",
    "Compressed",
    "MessagesCompressed",
    "Options",
    "compress_messages",
    "compress_text",
    "register",
]
