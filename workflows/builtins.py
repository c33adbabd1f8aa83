"""Built-in templates: read-only graphs every user can run (docs/usage.md#templates-and-definitions)."""

_CHAT_NODES = [
    {"id": "start", "type": "start"},
    {"id": "memory", "type": "memory"},
    {"id": "retrieval", "type": "retrieval"},
    {"id": "model", "type": "model"},
    {"id": "tools", "type": "tools"},
    {"id": "end", "type": "end"},
]
_CHAT_EDGES = [
    {"source": "start", "target": "memory"},
    {"source": "memory", "target": "retrieval"},
    {"source": "retrieval", "target": "model"},
    {"source": "model", "target": "tools", "condition": "has_tool_calls"},
    {"source": "model", "target": "end"},
    {"source": "tools", "target": "model"},
]

BUILTIN_TEMPLATES = [
    {
        "key": "universal_chat",
        "name": "Universal chat",
        "category": "chat",
        "description": "Memory, optional retrieval, and a model that calls tools until it can answer. "
        "Switches come from the run config (enable_memory, enable_retrieval, enable_tools).",
        "params": {"enable_memory": True, "memory_window": 10, "enable_tools": True,
                   "allowed_tools": ["calculator", "current_time"], "enable_retrieval": False},
        "graph": {
            "nodes": _CHAT_NODES,
            "edges": _CHAT_EDGES,
        },
    },
    {
        "key": "research_assistant",
        "name": "Research assistant",
        "category": "retrieval",
        "description": "Answers from your documents: retrieval on, memory on, tools on.",
        "params": {"enable_retrieval": True, "max_documents": 5,
                   "system_prompt": "Answer from the documents given; say when they do not cover the question."},
        "graph": {
            "nodes": _CHAT_NODES,
            "edges": _CHAT_EDGES,
        },
    },
    {
        "key": "summarize",
        "name": "Summarize",
        "category": "text",
        "description": "One model call that summarizes the input text. No tools, no memory.",
        "params": {"enable_tools": False, "enable_memory": False},
        "graph": {
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "summarize", "type": "model",
                 "config": {"system_message": "Summarize the user's text in at most three sentences.",
                            "enable_tools": False}},
                {"id": "end", "type": "end"},
            ],
            "edges": [{"source": "start", "target": "summarize"}, {"source": "summarize", "target": "end"}],
        },
    },
    {
        "key": "draft_and_refine",
        "name": "Draft and refine",
        "category": "text",
        "description": "A first model call drafts an answer, a second one critiques and improves it.",
        "params": {"enable_tools": False, "enable_memory": False},
        "graph": {
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "draft", "type": "model",
                 "config": {"system_message": "Write a first draft answer.", "enable_tools": False}},
                {"id": "refine", "type": "model",
                 "config": {"system_message": "Improve the draft above: fix mistakes, tighten it.",
                            "enable_tools": False}},
                {"id": "end", "type": "end"},
            ],
            "edges": [
                {"source": "start", "target": "draft"},
                {"source": "draft", "target": "refine"},
                {"source": "refine", "target": "end"},
            ],
        },
    },
    {
        "key": "tool_agent",
        "name": "Tool agent",
        "category": "agent",
        "description": "A model that uses tools, at most five rounds, counted by a loop node.",
        "params": {"enable_memory": False, "max_tool_calls": 10},
        "graph": {
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "rounds", "type": "loop", "config": {"max_iterations": 5}},
                {"id": "model", "type": "model"},
                {"id": "tools", "type": "tools"},
                {"id": "end", "type": "end"},
            ],
            "edges": [
                {"source": "start", "target": "rounds"},
                {"source": "rounds", "target": "model"},
                {"source": "model", "target": "tools", "condition": "has_tool_calls and loop rounds continue"},
                {"source": "model", "target": "end"},
                {"source": "tools", "target": "rounds"},
            ],
        },
    },
]

