"""The gateway: an OpenAI-compatible ``POST /v1/chat/completions`` that routes, calls the
upstream (with fallbacks), streams, and records decision and outcome in one hop.

:func:`parse_call` checks a request and resolves what it routes; :class:`Gateway` runs the
call's pipeline (:class:`Stage` is where the semantic cache and compression slot in);
``router.gateway.api`` has the endpoints.
"""

from router.gateway.request import GatewayCall, ModelNotFound, parse_call
from router.gateway.service import Call, CallResult, Gateway, Stage, UpstreamFailed, answer_text

__all__ = [
    "Call",
    "CallResult",
    "Gateway",
    "GatewayCall",
    "ModelNotFound",
    "Stage",
    "UpstreamFailed",
    "answer_text",
    "parse_call",
]
