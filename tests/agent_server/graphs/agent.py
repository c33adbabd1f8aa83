"""Python graphs as their authors write them (no Chatter in sight): a tool-calling agent on ChatOpenAI, pointed by
the environment at the fake OpenAI server of the tests. `house_graph` uses a model no price row knows."""
import os

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def agent_graph(model_name: str):
    model = ChatOpenAI(model=model_name, base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"],
                       max_retries=0).bind_tools([multiply])

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([multiply]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


graph = agent_graph("gpt-4o-mini")


def house_graph():
    return agent_graph("house-model-7")
