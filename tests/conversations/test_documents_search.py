"""documents_search, what `retrieval` nodes put in context (docs/usage.md#the-graph-format): the owner's documents
that contain the words of the query, most relevant first. PostgreSQL full-text search there, a ranked word match on
SQLite; both behave the same on everything below (`make test` runs this file on each)."""
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations.models import Document
from conversations.selectors import documents_search
from tests.factories import DocumentFactory

pytestmark = pytest.mark.django_db


def document(owner, title: str, content: str) -> Document:
    return DocumentFactory(owner=owner, title=title, content=content)


def titles(owner, query: str, limit: int = 5) -> list[str]:
    return [found["title"] for found in documents_search(owner_id=owner.pk, query=query, limit=limit)]


def test_it_finds_the_documents_that_contain_a_word_of_the_query(alice):
    document(alice, "Kiwi", "The kiwi is a flightless bird of New Zealand.")
    document(alice, "Tea", "Green tea is steeped at 80 degrees.")

    assert titles(alice, "Tell me about the kiwi") == ["Kiwi"]
    assert titles(alice, "how hot for green tea?") == ["Tea"]
    assert titles(alice, "volcanoes and glaciers") == []


def test_another_users_documents_are_never_found(alice, bob):
    document(alice, "Alice's kiwi notes", "kiwi kiwi kiwi")
    document(bob, "Bob's kiwi notes", "kiwi kiwi kiwi kiwi")

    assert titles(alice, "kiwi") == ["Alice's kiwi notes"]
    assert titles(bob, "kiwi") == ["Bob's kiwi notes"]


def test_the_most_relevant_document_comes_first(alice):
    document(alice, "Birds", "The kiwi is a bird. The kiwi lays one egg. A kiwi cannot fly.")
    document(alice, "Fruit", "Some call the kiwifruit a kiwi.")
    document(alice, "Rocks", "Granite and basalt.")

    assert titles(alice, "kiwi") == ["Birds", "Fruit"]


def test_a_match_in_the_title_counts_more_than_one_in_the_content(alice):
    document(alice, "Notes", "A paragraph that mentions penguins once.")
    document(alice, "Penguins", "Flightless seabirds of the southern hemisphere.")

    assert titles(alice, "penguins") == ["Penguins", "Notes"]


def test_documents_matching_more_words_of_the_query_rank_higher(alice):
    document(alice, "One", "The glacier moved.")
    document(alice, "Both", "The glacier carved the fjord.")

    assert titles(alice, "glacier fjord") == ["Both", "One"]


def test_case_and_punctuation_do_not_matter(alice):
    document(alice, "Volcanoes", "Mount ETNA erupts often.")

    assert titles(alice, "etna?!") == ["Volcanoes"]
    assert titles(alice, "ETNA") == ["Volcanoes"]


def test_a_word_inside_another_word_is_not_a_match(alice):
    document(alice, "Category theory", "Functors between categories.")
    document(alice, "Cats", "The cat sat on the mat.")

    assert titles(alice, "cat") == ["Cats"]


def test_query_syntax_characters_are_only_text(alice):
    document(alice, "Kiwi", "The kiwi is a flightless bird.")

    for query in ("kiwi & | ! ( ) :* <-> 'bird", "kiwi:*", "!kiwi", "(kiwi", "kiwi's", "kiwi\\", "kiwi\x00"):
        assert titles(alice, query) == ["Kiwi"], query


def test_a_query_without_searchable_words_finds_nothing(alice):
    document(alice, "Anything", "a b c ?! ...")

    for query in ("", "   ", "?!", "a b c", "!!! ..."):
        assert titles(alice, query) == [], query


def test_it_returns_at_most_the_limit(alice):
    for n in range(8):
        document(alice, f"Kiwi {n}", "kiwi " * (n + 1))

    assert titles(alice, "kiwi", limit=3) == ["Kiwi 7", "Kiwi 6", "Kiwi 5"]


def test_the_first_twenty_words_of_a_long_query_count(alice):
    document(alice, "Zebra", "The zebra has stripes.")
    document(alice, "Yak", "The yak lives high up.")
    filler = " ".join(f"abc{chr(97 + i)}" for i in range(18))  # words that sort before both

    assert titles(alice, f"zebra {filler} yak") == ["Yak", "Zebra"]  # the 1st and 20th words (ties: by title)
    assert titles(alice, f"zebra {filler} somethingelse yak") == ["Zebra"]  # the 21st is left out


def test_it_searches_old_documents_too(alice):
    oldest = document(alice, "Fjords", "Norway's fjords were carved by glaciers.")
    Document.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(days=365))
    Document.objects.bulk_create([Document(owner=alice, title=f"Filler {n}", content="nothing to see here")
                                  for n in range(1100)])

    assert titles(alice, "fjords") == ["Fjords"]


def test_the_context_carries_the_id_title_and_capped_content(alice):
    long = document(alice, "Long", "kiwi " + "x" * 10_000)

    [found] = documents_search(owner_id=alice.pk, query="kiwi", limit=5)

    assert found == {"id": str(long.pk), "title": "Long", "content": long.content[:4000]}


def test_it_runs_on_the_databases_own_search(alice):
    document(alice, "Kiwi", "kiwi")
    assert titles(alice, "kiwi") == ["Kiwi"]
    assert connection.vendor in ("sqlite", "postgresql")  # both are covered: make test runs this file on each
