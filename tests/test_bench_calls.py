"""The calls the benchmarks make into Chatter's engine (bench/chatter_calls.py) still fit it: B1, B2 and B5's
bare side run the built-in graph with hooks of their own, which broke unseen once when the token hook gained a
keyword argument."""
import pytest

from bench.chatter_calls import BareChat

pytestmark = pytest.mark.one_database  # the engine alone: no database


def test_the_bare_graph_answers_and_reports_its_first_token_to_the_benchmarks_hooks():
    bare = BareChat()
    turn = bare.turn("hello there")
    assert turn["reply"] and turn["usage"]["total_tokens"] > 0
    first = bare.first_token("hello there")
    assert 0 < first < 30
