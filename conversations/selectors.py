"""Reads of conversations and documents."""
from __future__ import annotations

import re

from django.db import connection
from django.db.models import Count, Sum, Value
from django.db.models.functions import Coalesce

from conversations.models import Conversation, Document, Message
from conversations.signals import conversation_busy
from conversations.statements import CONVERSATION_HISTORY

_WORD = re.compile(r"\w{3,}", re.UNICODE)
_AFTER_EVERY_MESSAGE = 2**63 - 1  # a sequence bound that leaves none out


def conversation_list(*, user):
    """The user's conversations: another user's are never visible."""
    return Conversation.objects.filter(owner=user)


def conversation_is_busy(*, conversation_id) -> bool:
    """Whether something of the apps above still writes to the conversation (a run in progress will save its reply
    there): the receivers of `conversation_busy` say."""
    return any(answer for _, answer in conversation_busy.send(sender=Conversation, conversation_id=conversation_id))


def document_list(*, user):
    return Document.objects.filter(owner=user)


def message_list(*, conversation: Conversation):
    return conversation.messages.order_by("sequence")


def conversation_history(*, conversation_id, limit: int, before_sequence: int | None = None,
                         before_turn_of=None) -> list[tuple[str, str]]:
    """(role, content) of the last `limit` user/assistant/system messages, oldest first: before a sequence number,
    or else before the first user message of run `before_turn_of` (the turn's own message, once written; nothing
    when it has none), or else of the whole conversation. One statement (CONVERSATION_HISTORY)."""
    if before_sequence is None and before_turn_of is None:
        before_sequence = _AFTER_EVERY_MESSAGE
    prepared = Message._meta.get_field("conversation").get_db_prep_value
    params = [prepared(conversation_id, connection), before_sequence,
              Message._meta.get_field("execution").get_db_prep_value(before_turn_of, connection), limit]
    with connection.cursor() as cursor:
        cursor.execute(CONVERSATION_HISTORY, params)
        newest = cursor.fetchall()
    return [tuple(row) for row in reversed(newest)]


def documents_search(*, owner_id, query: str, limit: int) -> list[dict]:
    """The owner's documents most relevant to the query: full-text search on PostgreSQL, a ranked whole-word
    match elsewhere (a title word counts twice). The first 20 distinct words of the query are searched."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:20]
    if not words:
        return []
    documents = Document.objects.filter(owner_id=owner_id)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

        search = SearchQuery(" | ".join(words), search_type="raw")
        vector = SearchVector("title", weight="A") + SearchVector("content", weight="B")
        found = documents.annotate(rank=SearchRank(vector, search)).filter(rank__gt=0).order_by("-rank", "title")
        return [_as_context(d) for d in found[:limit]]
    # The database narrows to documents containing a word anywhere (LIKE); whole words are counted here.
    from django.db.models import Q

    containing = Q()
    for word in words:
        containing |= Q(title__icontains=word) | Q(content__icontains=word)
    wanted = set(words)
    scored = []
    for document in documents.filter(containing).only("id", "title", "content")[:5000]:
        text = f"{document.title} {document.title} {document.content}".lower()
        score = sum(1 for word in re.findall(r"\w+", text) if word in wanted)
        if score:
            scored.append((-score, document.title, document))
    scored.sort(key=lambda item: item[:2])
    return [_as_context(d) for _, _, d in scored[:limit]]


def _as_context(document: Document) -> dict:
    return {"id": str(document.id), "title": document.title, "content": document.content[:4000]}


def conversation_totals_from_messages(*, conversation_ids=None) -> dict:
    """The aggregates each conversation should have, computed from its messages (for reconciling I1)."""
    zero = Value(0)
    rows = Conversation.objects.all()
    if conversation_ids is not None:
        rows = rows.filter(pk__in=conversation_ids)
    rows = rows.annotate(
        real_count=Count("messages"),
        real_prompt=Coalesce(Sum("messages__prompt_tokens"), zero),
        real_completion=Coalesce(Sum("messages__completion_tokens"), zero),
        real_total=Coalesce(Sum("messages__total_tokens"), zero),
        real_cost=Coalesce(Sum("messages__cost"), Value(0, output_field=Message._meta.get_field("cost"))),
    )
    return {
        row.pk: {
            "stored": {
                "message_count": row.message_count,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "total_tokens": row.total_tokens,
                "total_cost": row.total_cost,
            },
            "actual": {
                "message_count": row.real_count,
                "prompt_tokens": row.real_prompt,
                "completion_tokens": row.real_completion,
                "total_tokens": row.real_total,
                "total_cost": row.real_cost,
            },
        }
        for row in rows
    }
