"""Offline input-token estimate for route calls that send messages instead of a count.

No tokenizer is downloaded at run time. The estimate is OpenAI's rule of thumb of ~4 characters
per token for English text (OpenAI Help Center, "What are tokens and how to count them?") plus the
chat format overhead of 3 tokens per message and 3 for the reply primer (OpenAI Cookbook, "How to
count tokens with tiktoken"). It is a routing signal, not a bill: outcomes carry real usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
REPLY_PRIMER_TOKENS = 3


def text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of content parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def estimate_text_tokens(text: str) -> int:
    """ceil(len(text) / 4) tokens."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of a chat: text tokens + 3 per message + 3 reply primer."""
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_text_tokens(text_of(message.get("content")))
    return total
