"""A Python graph as its author writes it, with a stored prompt fetched in its node (tests/prompts)."""
import os

from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph

from engine.graph_prompts import prompt_fetch


def agent(state: MessagesState) -> dict:
    prompt = prompt_fetch("support", label="production", variables={"topic": "teapots"})
    model = ChatOpenAI(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"],
                       api_key=os.environ["OPENAI_API_KEY"], max_retries=0,
                       temperature=prompt.config.get("temperature"))
    return {"messages": [model.invoke([*prompt.messages, *state["messages"]])]}


builder = StateGraph(MessagesState)
builder.add_node("agent", agent)
builder.add_edge(START, "agent")
graph = builder.compile()
