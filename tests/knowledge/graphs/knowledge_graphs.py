"""Registered graphs that search knowledge collections through workflows.graph_knowledge, as their author writes
them: `retriever_graph` answers with the best chunk a retriever finds (no model); `agent_graph` is a ReAct agent
(ChatOpenAI, pointed by the environment at the tests' fake OpenAI server) with the collection as a tool."""
import os

from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph

from workflows.graph_knowledge import collections_retriever, collections_tool


def _answer(state: MessagesState) -> dict:
    found = collections_retriever(["manuals"], k=1).invoke(state["messages"][-1].content)
    return {"messages": [AIMessage(found[0].page_content if found else "nothing found",
                                   additional_kwargs={"citations": [doc.metadata for doc in found]})]}


_builder = StateGraph(MessagesState)
_builder.add_node("answer", _answer)
_builder.add_edge(START, "answer")
_builder.add_edge("answer", END)
retriever_graph = _builder.compile()


def agent_graph():
    model = ChatOpenAI(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"],
                       api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    return create_agent(model, tools=[collections_tool(["manuals"], name="search_manuals", k=1)])
