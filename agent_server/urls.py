"""/langgraph/ (mounted by chatter_project.urls): the paths of LangGraph's Agent Server API."""
from django.urls import path

from agent_server import views

urlpatterns = [
    path("assistants/search", views.assistant_search),
    path("assistants/count", views.assistant_count),
    path("assistants/<str:assistant_id>", views.assistant_detail),
    path("assistants/<str:assistant_id>/graph", views.assistant_graph),
    path("assistants/<str:assistant_id>/schemas", views.assistant_schemas),
    path("assistants/<str:assistant_id>/subgraphs", views.assistant_subgraphs),
    path("assistants/<str:assistant_id>/subgraphs/<str:namespace>", views.assistant_subgraphs),
    path("assistants/<str:assistant_id>/versions", views.assistant_versions),
    path("threads", views.thread_create),
    path("threads/search", views.thread_search),
    path("threads/count", views.thread_count),
    path("threads/<str:thread_id>", views.thread_detail),
    path("threads/<str:thread_id>/copy", views.thread_copy),
    path("threads/<str:thread_id>/state", views.thread_state),
    path("threads/<str:thread_id>/state/checkpoint", views.thread_state_at_checkpoint),
    path("threads/<str:thread_id>/state/<str:checkpoint_id>", views.thread_state_at),
    path("threads/<str:thread_id>/history", views.thread_history),
    path("threads/<str:thread_id>/runs", views.thread_runs),
    path("threads/<str:thread_id>/runs/stream", views.thread_runs_stream),
    path("threads/<str:thread_id>/runs/wait", views.thread_runs_wait),
    path("threads/<str:thread_id>/runs/<str:run_id>", views.run_detail),
    path("threads/<str:thread_id>/runs/<str:run_id>/join", views.run_join_view),
    path("threads/<str:thread_id>/runs/<str:run_id>/stream", views.run_join_stream),
    path("threads/<str:thread_id>/runs/<str:run_id>/cancel", views.run_cancel_view),
    path("runs", views.stateless_runs),
    path("runs/stream", views.stateless_runs_stream),
    path("runs/wait", views.stateless_runs_wait),
    path("store/items", views.store_items),
    path("store/items/search", views.store_search),
    path("store/namespaces", views.store_namespaces),
]
