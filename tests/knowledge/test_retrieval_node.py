"""Issue 45, "In workflows": the retrieval node searches the knowledge collections its definition names (hybrid by
default), as the run's owner sees them (their own and the shared ones); each retrieval is recorded (query,
collections, chunk ids, scores, latency, the query's embedding as an LLM call of the node) and shown in the run's
timeline; the answer cites the chunks it was given (the assistant message's metadata, the run's output). make test
runs this file on SQLite (sqlite-vec, FTS5) and PostgreSQL (pgvector, full-text search). Python graphs get the same
search as a LangChain retriever and as a tool (workflows.graph_knowledge), recorded the same way."""
from pathlib import Path

import pytest

from conversations.models import Message
from core.errors import InvalidInput
from knowledge.ingest import document_ingest
from knowledge.models import Chunk
from knowledge.services import collection_create, document_add
from tests.factories import DocumentFactory, WorkflowDefinitionFactory
from workflows.models import ExecutionEvent, LLMCall, NodeExecution, ToolCall
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.definitions import definition_create
from workflows.services.runs import execution_create, execution_run
from workflows.timeline import run_timeline

pytestmark = pytest.mark.django_db

MODEL = "local/local-embed-1"  # the offline embedder (hashed words): quick, and enough to rank by shared words
DOCUMENTS = [("Seal", "A cracked kettle seal lets water out of the kettle."),
             ("Gears", "Index the rear derailleur by turning the barrel adjuster.")]


def graph(**retrieval) -> dict:
    return {"nodes": [{"id": "start", "type": "start"}, {"id": "search", "type": "retrieval", "config": retrieval},
                      {"id": "answer", "type": "model"}, {"id": "end", "type": "end"}],
            "edges": [{"source": "start", "target": "search"}, {"source": "search", "target": "answer"},
                      {"source": "answer", "target": "end"}]}


def collection_with_documents(owner, name: str, *, shared: bool = False):
    collection = collection_create(owner=owner, name=name, embedding_model=MODEL, shared=shared)
    for title, text in DOCUMENTS:
        document, _ = document_add(collection=collection, actor=owner, title=title, text=text)
        assert document_ingest(document).status == "ready"
    return collection


def turn(owner, message: str, **retrieval):
    nodes = graph(**retrieval)
    definition = WorkflowDefinitionFactory(owner=owner, nodes=nodes["nodes"], edges=nodes["edges"])
    execution = execution_create(ChatRequest(owner=owner, message=message, definition_id=definition.pk))
    return execution_run(execution_id=execution.pk)


def test_item_in_workflows_the_retrieval_node_searches_named_collections_and_cites_the_chunks(alice):
    manuals = collection_with_documents(alice, "manuals")
    seal = Chunk.objects.get(document__title="Seal")

    execution = turn(alice, "why does my kettle leak water?", collections=["manuals"], k=1)

    assert execution.status == "completed", execution.error_message
    cited = {"chunk_id": seal.pk, "document_id": str(seal.document_id), "collection_id": str(manuals.pk),
             "title": "Seal", "position": 0}
    (citation,) = execution.output_data["citations"]
    assert {key: citation[key] for key in cited} == cited and citation["score"] > 0
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.metadata["citations"] == execution.output_data["citations"]
    node = NodeExecution.objects.get(execution=execution, node_id="search")
    assert node.output["documents"] == [seal.pk] and node.output["citations"] == [citation]


def test_item_in_workflows_each_retrieval_is_recorded_with_its_embedding_call(alice):
    collection_with_documents(alice, "manuals")
    seal = Chunk.objects.get(document__title="Seal")

    execution = turn(alice, "kettle seal", collections=["manuals"], k=2)

    (event,) = ExecutionEvent.objects.filter(execution=execution, event="retrieval")
    record = event.data
    assert (record["node_id"], record["query"], record["collections"], record["mode"], record["k"]) == (
        "search", "kettle seal", ["manuals"], "hybrid", 2)
    assert record["chunks"][0]["chunk_id"] == seal.pk and record["chunks"][0]["score"] > 0
    assert record["latency_ms"] >= 0 and record["embeddings"] == [{"model": MODEL, "texts": 1}]
    node = NodeExecution.objects.get(execution=execution, node_id="search")
    (embedding,) = LLMCall.objects.filter(execution=execution, kind="embedding")
    assert embedding.node_execution_id == node.pk and (embedding.provider, embedding.requested_model) == (
        "local", "local-embed-1")
    assert embedding.prompt_tokens > 0 and node.llm_calls == 1 and node.total_tokens == embedding.total_tokens
    execution.refresh_from_db()
    assert execution.llm_calls == 2  # the query's embedding and the answer
    bars = [bar for bar in run_timeline(execution).bars if bar.kind == "retrieval"]
    assert [bar.label for bar in bars] == ['search: "kettle seal" in manuals, 2 chunks']


def test_item_in_workflows_a_shared_collection_is_searched_another_users_is_refused(alice, bob, staff):
    handbook = collection_with_documents(staff, "handbook", shared=True)
    private = collection_with_documents(bob, "bobs")
    nodes = graph(collections=["handbook"])
    definition = WorkflowDefinitionFactory(owner=alice, nodes=nodes["nodes"], edges=nodes["edges"])

    shared = execution_run(execution_id=execution_create(ChatRequest(
        owner=alice, message="kettle seal", definition_id=definition.pk)).pk)
    pending = execution_create(ChatRequest(owner=alice, message="kettle seal", definition_id=definition.pk))
    handbook.shared = False  # no longer alice's to search: her next run is refused as it starts...
    handbook.save(update_fields=["shared"])
    with pytest.raises(InvalidInput, match="'handbook': no such collection of yours or shared"):
        execution_create(ChatRequest(owner=alice, message="kettle seal", definition_id=definition.pk))
    unshared = execution_run(execution_id=pending.pk)  # ... and one made before fails as it searches

    assert shared.status == "completed" and shared.output_data["citations"][0]["title"] == "Seal"
    assert (unshared.status, unshared.error_type) == ("failed", "collection_not_found")
    assert "'handbook': no such collection of yours or shared" in unshared.error_message
    assert not ExecutionEvent.objects.filter(execution=unshared, event="retrieval").exists()
    assert not LLMCall.objects.filter(execution=unshared, kind="embedding").exists()
    for ref in ("bobs", str(private.pk), "nowhere"):  # another user's is answered as a missing one
        with pytest.raises(InvalidInput) as refused:
            definition_create(owner=alice, name="peek", **graph(collections=[ref]))
        assert refused.value.details == [{"path": "nodes[1].config.collections", "code": "not_found",
                                          "message": f"{ref!r}: no such collection of yours or shared"}]


def test_a_collection_named_like_an_id_is_found_by_its_name_and_an_id_still_names_its_own(alice):
    manuals = collection_with_documents(alice, "manuals")
    named_like_an_id = collection_with_documents(alice, "6f1c2b9e-0000-4000-8000-00000000abcd")
    named_like_manuals_id = collection_create(owner=alice, name=str(manuals.pk), embedding_model=MODEL)

    by_name = turn(alice, "kettle seal", collections=["6f1c2b9e-0000-4000-8000-00000000abcd"], k=1)
    by_id = turn(alice, "kettle seal", collections=[str(manuals.pk)], k=1)

    assert by_name.status == "completed", by_name.error_message
    assert by_name.output_data["citations"][0]["collection_id"] == str(named_like_an_id.pk)
    assert by_id.status == "completed", by_id.error_message  # the id, not the empty collection of that name
    assert by_id.output_data["citations"][0]["collection_id"] == str(manuals.pk) != str(named_like_manuals_id.pk)


def test_item_in_workflows_without_collections_the_old_documents_are_searched(alice):
    DocumentFactory(owner=alice, title="Kiwi facts", content="The kiwi is a flightless bird.")
    collection_with_documents(alice, "manuals")
    nodes = graph()
    definition = WorkflowDefinitionFactory(owner=alice, nodes=nodes["nodes"], edges=nodes["edges"])
    execution = execution_run(execution_id=execution_create(ChatRequest(
        owner=alice, message="tell me about the kiwi", definition_id=definition.pk,
        config={"enable_retrieval": True})).pk)

    node = NodeExecution.objects.get(execution=execution, node_id="search")
    assert node.status == "completed" and len(node.output["documents"]) == 1
    assert "citations" not in execution.output_data
    assert not LLMCall.objects.filter(execution=execution, kind="embedding").exists()


def python_graph_run(owner, settings, attribute: str, message: str):
    settings.CHATTER_GRAPHS = {"knowledge": (str(Path(__file__).parent / "graphs" / "knowledge_graphs.py"),
                                             attribute)}
    graph = {"nodes": [{"id": "start", "type": "start"},
                       {"id": "agent", "type": "python_graph", "config": {"graph": "knowledge"}},
                       {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "agent"}, {"source": "agent", "target": "end"}]}
    return execution_run(execution_id=execution_create(ExecutionRequest(owner=owner, graph=graph,
                                                                        message=message)).pk)


def test_item_python_graphs_get_the_same_search_as_a_retriever(alice, bob, settings):
    collection_with_documents(alice, "manuals")
    seal = Chunk.objects.get(document__title="Seal")

    execution = python_graph_run(alice, settings, "retriever_graph", "kettle seal")
    refused = python_graph_run(bob, settings, "retriever_graph", "kettle seal")  # bob has no "manuals"

    assert execution.status == "completed", execution.error_message
    assert execution.output_data["content"] == DOCUMENTS[0][1]
    (event,) = ExecutionEvent.objects.filter(execution=execution, event="retrieval")
    assert (event.data["node_id"], event.data["query"], event.data["collections"]) == (
        "answer", "kettle seal", ["manuals"])  # the graph's own node that searched
    assert [chunk["chunk_id"] for chunk in event.data["chunks"]] == [seal.pk]
    (embedding,) = LLMCall.objects.filter(execution=execution, kind="embedding")
    assert embedding.node_execution.node_id == "answer" and embedding.prompt_tokens > 0
    assert refused.status == "failed" and "no such collection of yours or shared" in refused.error_message
    assert not LLMCall.objects.filter(execution=refused).exists()


def test_item_python_graphs_get_the_same_search_as_a_tool(alice, settings, monkeypatch, openai_server):
    collection_with_documents(alice, "manuals")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    openai_server.reply(tool_calls=[{"name": "search_manuals", "arguments": {"query": "kettle seal"}}],
                        usage={"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60})
    openai_server.reply(content="The seal is cracked.", usage={"prompt_tokens": 80, "completion_tokens": 6,
                                                               "total_tokens": 86})

    execution = python_graph_run(alice, settings, "agent_graph", "Why does my kettle leak?")

    assert execution.status == "completed", execution.error_message
    (tool,) = ToolCall.objects.filter(execution=execution)
    assert (tool.tool, tool.ok, tool.result) == ("search_manuals", True, DOCUMENTS[0][1])
    assert DOCUMENTS[0][1] in str(openai_server.requests[1].body["messages"][-1])  # what the model was told
    (event,) = ExecutionEvent.objects.filter(execution=execution, event="retrieval")
    assert event.data["query"] == "kettle seal" and len(event.data["chunks"]) == 1
    kinds = sorted(LLMCall.objects.filter(execution=execution).values_list("kind", flat=True))
    assert kinds == ["chat", "chat", "embedding"] and execution.llm_calls == 3 and execution.tool_calls == 1


def test_item_in_workflows_a_chunk_or_message_with_no_word_finds_nothing_by_meaning(alice):
    """A chunk whose vector has no direction (emoji only) matches nothing, and a turn whose message has no word
    searches to no chunk by meaning: the run completes (hybrid by default, its words find what they can)."""
    manuals = collection_with_documents(alice, "manuals")
    emoji, _ = document_add(collection=manuals, actor=alice, title="Emoji", text="🙂👍 !!!")
    assert document_ingest(emoji).status == "ready"

    worded = turn(alice, "why does my kettle leak water?", collections=["manuals"], k=3)
    wordless = turn(alice, "???", collections=["manuals"], k=3, mode="vector")

    assert worded.status == "completed", worded.error_message
    titles = [c["title"] for c in worded.output_data["citations"]]
    assert titles[0] == "Seal" and "Emoji" not in titles
    assert wordless.status == "completed", wordless.error_message
    (event,) = ExecutionEvent.objects.filter(execution=wordless, event="retrieval")
    assert event.data["chunks"] == []
    assert LLMCall.objects.filter(execution=wordless, kind="embedding").count() == 1  # the query, embedded
