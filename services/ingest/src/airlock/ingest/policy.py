"""What an authenticated client may ask for: deny by default (pure; no Kafka)."""

from __future__ import annotations

from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import LLMRequest
from airlock.core.topics import Topics
from airlock.ingest.clients import ClientPolicy, ClientsFile, Limits, allows


def may_reply(client_id: str, policy: ClientPolicy, reply_to: str | None, topics: Topics) -> bool:
    """Whether replies for this client may go to ``reply_to``.

    Its own reply topic (``<prefix>responses.<client>``), or another one under
    ``<prefix>responses.`` that the client's ``reply_topics`` list names: a client can never
    make Airlock write into another system's topics, nor into another client's replies
    unless the clients file says so.
    """
    if not reply_to:
        return False
    return reply_to == topics.reply_topic(client_id) or (
        topics.is_reply_topic(reply_to) and allows(policy.reply_topics, reply_to)
    )


def authorize(policy: ClientPolicy, clients: ClientsFile, request: LLMRequest, topics: Topics) -> Limits:
    """Check the request against the client's grants.

    Returns:
        The tenant's limits (the tenant is declared and the client may use it).

    Raises:
        StageError: ``reply_topic_not_allowed``, ``unknown_tenant``, ``tenant_not_allowed``,
            ``model_not_allowed``, ``use_case_not_allowed``, ``too_large`` or
            ``param_not_allowed``.
    """
    client = request.client_id
    if not may_reply(client, policy, request.reply_to, topics):
        raise StageError(
            ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
            f"client {client!r} may not name reply topic {request.reply_to!r}",
        )
    limits = clients.tenant_limits(request.tenant)
    if limits is None:
        raise StageError(ErrorCode.UNKNOWN_TENANT, f"tenant {request.tenant!r} is not declared")
    if not allows(policy.tenants, request.tenant):
        raise StageError(ErrorCode.TENANT_NOT_ALLOWED, f"client {client!r} may not bill tenant {request.tenant!r}")
    if not allows(policy.models, request.model):
        raise StageError(ErrorCode.MODEL_NOT_ALLOWED, f"client {client!r} may not use model {request.model!r}")
    if not allows(policy.use_cases, request.use_case):
        raise StageError(ErrorCode.USE_CASE_NOT_ALLOWED, f"client {client!r} may not use use case {request.use_case!r}")
    chars = request.prompt_chars()
    if chars > policy.max_prompt_chars:
        raise StageError(
            ErrorCode.TOO_LARGE,
            f"prompt is {chars} characters; client {client!r} may send at most {policy.max_prompt_chars}",
        )
    max_tokens = request.params.max_tokens
    if max_tokens is not None and max_tokens > policy.max_tokens:
        raise StageError(
            ErrorCode.PARAM_NOT_ALLOWED,
            f"max_tokens {max_tokens} is above client {client!r}'s limit of {policy.max_tokens}",
        )
    return limits
