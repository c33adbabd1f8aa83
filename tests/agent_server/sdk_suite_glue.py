"""Connection glue for LangGraph's SDK integration suite (langgraph-sdk 0.4.3's `tests/integration/`), loaded into
that suite's own pytest run with `-p sdk_suite_glue` by test_sdk_integration_suite.py. It changes no test, no
fixture's code and no assertion; it only points the suite's own connections at Chatter and gives them its key:

- the raw httpx clients the suite's fixtures build (`async_threads` / `sync_threads`: `base_url` is already
  LANGGRAPH_INTEGRATION_URL) get the `x-api-key` header (LANGGRAPH_API_KEY), which the SDK clients built on them send;
- the server URL carries the key as its user part (`http://<key>:@host/langgraph`): the SDK builds its websocket's
  URL from it (the handshake sends none of the clients' headers), and the socket's client sends it as credentials;
- test_remote_graph_v3.py names the stock server's address in a module constant (`URL`) instead of reading
  LANGGRAPH_INTEGRATION_URL: it gets the same server URL, and its RemoteGraphs' clients the same header.

The suite's health probe (`GET /ok`, without a key) is left as upstream wrote it: when it fails, every test skips.
"""
from __future__ import annotations

import os

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph

SERVER_URL = os.environ["LANGGRAPH_INTEGRATION_URL"]
API_KEY = os.environ["LANGGRAPH_API_KEY"]
STOCK_SERVER_URL = "http://localhost:2024"  # the upstream suite's default, hard-coded in test_remote_graph_v3.py


def suite_http_clients(value) -> list[httpx.Client | httpx.AsyncClient]:
    """The httpx clients inside what one of the suite's fixtures returned."""
    if isinstance(value, (httpx.Client, httpx.AsyncClient)):
        return [value]
    if isinstance(value, tuple):  # conftest.py's `(threads_client, raw_httpx)` pairs
        return [client for item in value for client in suite_http_clients(item)]
    if isinstance(value, RemoteGraph):  # test_remote_graph_v3.py's `remote_agent` / `remote_tools_agent`
        return [sdk.http.client for sdk in (value.client, value.sync_client) if sdk is not None]
    return []


def pytest_collection_modifyitems(items) -> None:
    for module in {item.module for item in items if getattr(item, "module", None) is not None}:
        if getattr(module, "URL", None) == STOCK_SERVER_URL:
            module.URL = SERVER_URL


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    value = yield
    for client in suite_http_clients(value):
        client.headers["x-api-key"] = API_KEY
    return value


def pytest_report_header(config) -> str:
    import langgraph_sdk

    return f"sdk_suite_glue: {SERVER_URL}; langgraph-sdk {langgraph_sdk.__version__} ({langgraph_sdk.__file__})"
