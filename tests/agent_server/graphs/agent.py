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


def calculator_graph():
    """`graph` built at each run, pointed at the OPENAI_BASE_URL of then: for tests in the suite's own process, where
    this module is loaded once and another test's fake server may have been the one of its import."""
    return agent_graph("gpt-4o-mini")


def house_graph():
    return agent_graph("house-model-7")


def review_graph():
    """A draft, a person's review (LangGraph's interrupt()), then the final answer: a model call on each side."""
    from langchain_core.messages import HumanMessage
    from langgraph.types import interrupt

    model = ChatOpenAI(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"],
                       api_key=os.environ["OPENAI_API_KEY"], max_retries=0)

    def draft(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    def review(state: MessagesState) -> dict:
        verdict = interrupt({"question": "Is the draft right?", "draft": state["messages"][-1].content})
        return {"messages": [HumanMessage(f"Reviewer: {verdict}")]}

    def final(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("final", final)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "final")
    builder.add_edge("final", END)
    return builder.compile()


def streaming_graph():
    """One streamed call of ChatOpenAI, its usage asked for (`stream_usage`), as a graph that shows its reply as it
    comes is written."""
    model = ChatOpenAI(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"],
                       max_retries=0, streaming=True, stream_usage=True)

    def answer(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()
