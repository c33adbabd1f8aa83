"""The engine: graphs of nodes (and Python graphs of one's own) run on LangGraph, their model calls over providers
and deployments, their usage and cost. Plain Python that imports no Django and no other package of the project; the
application hands it its settings and records what its runs do (docs/architecture.md#the-engine)."""
