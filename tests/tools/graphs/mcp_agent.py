"""ReAct agents as their author writes them, their tools the run's owner's MCP tools (workflows.graph_tools.run_tools);
their model ChatOpenAI, pointed by the environment at the tests' fake OpenAI server. `graph` may call the tracker's
add and fail; `any_tool_graph` every tool of the tracker."""
import os

from langchain.agents import create_agent
from langchain_openai import ChatOpenAI

from workflows.graph_tools import run_tools


def _model():
    return ChatOpenAI(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"],
                      api_key=os.environ["OPENAI_API_KEY"], max_retries=0)


async def graph(config):
    return create_agent(_model(), tools=await run_tools(config, allowed=["tracker__add", "tracker__fail"]))


async def any_tool_graph(config):
    return create_agent(_model(), tools=await run_tools(config, allowed=["tracker__*"]))
