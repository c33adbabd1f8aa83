"""A graph whose model answers in content parts, as Anthropic's models (and OpenAI's Responses API) do, and whose
tool answers a text and an image, as an MCP tool through langchain-mcp-adapters does. The model reports its usage
as such a model does (`usage_metadata`); it is offline."""
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"  # (a PNG's first bytes, base64)
USAGES = ({"input_tokens": 30, "output_tokens": 5, "total_tokens": 35},
          {"input_tokens": 60, "output_tokens": 7, "total_tokens": 67})


@tool
def chart() -> list:
    """Draws the chart."""
    return [{"type": "text", "text": "a bar chart"}, {"type": "image", "base64": IMAGE, "mime_type": "image/png"}]


class PartsModel(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "content-parts"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "PartsModel":
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        if not any(isinstance(message, ToolMessage) for message in messages):
            reply = AIMessage([{"type": "text", "text": "Let me draw it."},
                               {"type": "tool_use", "id": "call-chart", "name": "chart", "input": {}}],
                              usage_metadata=USAGES[0], tool_calls=[{"name": "chart", "args": {}, "id": "call-chart"}])
        else:
            reply = AIMessage([{"type": "text", "text": "Here is "}, {"type": "text", "text": "the chart."}],
                              usage_metadata=USAGES[1])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _agent(state: MessagesState) -> dict:
    return {"messages": [PartsModel().invoke(state["messages"])]}


_builder = StateGraph(MessagesState)
_builder.add_node("agent", _agent)
_builder.add_node("tools", ToolNode([chart]))
_builder.add_edge(START, "agent")
_builder.add_conditional_edges("agent", tools_condition)
_builder.add_edge("tools", "agent")
graph = _builder.compile()
