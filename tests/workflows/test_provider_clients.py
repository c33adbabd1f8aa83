"""The providers' model objects: one per set of parameters (and tools) and process, so LangChain describes each
once; the `openai` provider's over one pool of kept-alive connections per process, and a forked process (django-q2's
workers) never uses a connection its parent opened."""
import multiprocessing

from langchain_core.messages import HumanMessage

from engine.providers import chat_model
from engine.tools import TOOLS
from tests.openai_stub import OpenAIStub

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


def test_the_local_model_with_the_same_tools_is_one_object_that_answers_each_turn():
    def local():
        return chat_model(provider="local", model="local-echo-1", temperature=None, max_tokens=None, timeout_s=10)

    assert local() is local()
    with_tools = local().bind_tools([TOOLS["calculator"], TOOLS["current_time"]])
    assert local().bind_tools([TOOLS["calculator"], TOOLS["current_time"]]) is with_tools
    assert local().bind_tools([TOOLS["calculator"]]) is not with_tools and with_tools is not local()
    for _ in range(2):  # shared, it keeps nothing of a call for the next
        reply = with_tools.invoke([HumanMessage("What is 12*7?")])
        assert [call["name"] for call in reply.tool_calls] == ["calculator"]
    assert local().invoke([HumanMessage("What is 12*7?")]).tool_calls == []  # without tools, it answers
