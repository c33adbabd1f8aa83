"""The `openai` provider's clients: one model object per set of parameters, over one pool of kept-alive connections
per process, and a forked process (django-q2's workers) never uses a connection its parent opened."""
import multiprocessing

from langchain_core.messages import HumanMessage

from tests.openai_stub import OpenAIStub
from workflows.engine.providers import chat_model

USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def model():
    return chat_model(provider="openai", model="gpt-4o-mini", temperature=None, max_tokens=None, timeout_s=10)


def _call_in_child(results) -> None:
    results.put(model().invoke([HumanMessage("hi")]).content)


def test_calls_share_a_model_and_a_connection_and_a_forked_process_opens_its_own(settings):
    with OpenAIStub(keep_alive=True) as upstream:
        upstream.always(content="hi", usage=USAGE)
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = upstream.base_url, "sk-test-not-a-real-key"
        assert model() is model()
        assert chat_model(provider="openai", model="gpt-4o", temperature=None, max_tokens=None,
                          timeout_s=10) is not model()
        for _ in range(3):
            assert model().invoke([HumanMessage("hi")]).content == "hi"
        assert upstream.connections == 1

        fork = multiprocessing.get_context("fork")
        results = fork.Queue()
        child = fork.Process(target=_call_in_child, args=(results,))
        child.start()
        assert results.get(timeout=30) == "hi"
        child.join(timeout=30)
        assert child.exitcode == 0
        assert upstream.connections == 2  # the child's own

        assert model().invoke([HumanMessage("hi")]).content == "hi"  # the parent's connection, untouched
        assert upstream.connections == 2
        assert len(upstream.requests) == 5
