"""/langgraph/ (mounted by chatter_project.urls): the paths of LangGraph's Agent Server API."""
from django.urls import path, re_path

from agent_server import cron_views, run_views, views

urlpatterns = [
    path("ok", views.ServerOk.as_view()),
    path("info", views.ServerInfo.as_view()),
    # Routes the SDK calls that Chatter does not serve: a 422 naming them (not a bare 404 or 405).
    path("threads/<str:thread_id>/stream", views.NotServed.as_view(
        http_method_names=["get"], what="threads.join_stream (GET /threads/{thread_id}/stream)",
        instead="join a run's stream (GET /threads/{thread_id}/runs/{run_id}/stream), or follow the thread's "
                "events (POST /threads/{thread_id}/stream/events)")),
    path("runs/cancel", run_views.RunsCancelMany.as_view()),
    path("runs/batch", run_views.RunsBatch.as_view()),
    path("runs/crons", cron_views.CronCreateView.as_view()),
    path("runs/crons/search", cron_views.CronSearchView.as_view()),
    path("runs/crons/count", cron_views.CronCount.as_view()),
    path("runs/crons/<str:cron_id>", cron_views.CronDetail.as_view()),
    path("threads/<str:thread_id>/runs/crons", cron_views.CronCreateView.as_view()),
    path("assistants", views.AssistantCreateView.as_view()),
    path("assistants/search", views.AssistantSearchView.as_view()),
    path("assistants/count", views.AssistantCount.as_view()),
    path("assistants/<str:assistant_id>", views.AssistantDetail.as_view()),
    path("assistants/<str:assistant_id>/graph", views.AssistantGraph.as_view()),
    path("assistants/<str:assistant_id>/schemas", views.AssistantSchemas.as_view()),
    path("assistants/<str:assistant_id>/subgraphs", views.AssistantSubgraphs.as_view()),
    path("assistants/<str:assistant_id>/subgraphs/<str:namespace>", views.AssistantSubgraphs.as_view()),
    path("assistants/<str:assistant_id>/versions", views.AssistantVersions.as_view()),
    path("assistants/<str:assistant_id>/latest", views.AssistantLatestView.as_view()),
    path("threads", views.ThreadCreateView.as_view()),
    path("threads/search", views.ThreadSearchView.as_view()),
    path("threads/prune", views.ThreadPruneView.as_view()),
    path("threads/count", views.ThreadCount.as_view()),
    path("threads/<str:thread_id>", views.ThreadDetail.as_view()),
    path("threads/<str:thread_id>/copy", views.ThreadCopy.as_view()),
    path("threads/<str:thread_id>/commands", views.ThreadCommands.as_view()),
    path("threads/<str:thread_id>/stream/events", views.ThreadEventStream.as_view()),
    path("threads/<str:thread_id>/state", views.ThreadState.as_view()),
    path("threads/<str:thread_id>/state/checkpoint", views.ThreadStateAtCheckpoint.as_view()),
    path("threads/<str:thread_id>/state/<str:checkpoint_id>", views.ThreadStateAt.as_view()),
    path("threads/<str:thread_id>/history", views.ThreadHistory.as_view()),
    path("threads/<str:thread_id>/runs", run_views.RunsView.as_view()),
    path("threads/<str:thread_id>/runs/stream", run_views.RunsStream.as_view()),
    path("threads/<str:thread_id>/runs/wait", run_views.RunsWait.as_view()),
    path("threads/<str:thread_id>/runs/<str:run_id>", run_views.RunDetail.as_view()),
    path("threads/<str:thread_id>/runs/<str:run_id>/join", run_views.RunJoin.as_view()),
    path("threads/<str:thread_id>/runs/<str:run_id>/stream", run_views.RunJoinStream.as_view()),
    path("threads/<str:thread_id>/runs/<str:run_id>/cancel", run_views.RunCancel.as_view()),
    path("runs", run_views.StatelessRuns.as_view()),
    path("runs/stream", run_views.RunsStream.as_view()),
    path("runs/wait", run_views.RunsWait.as_view()),
    path("runs/<str:run_id>/join", run_views.RunJoin.as_view()),  # a run without a thread (its /runs/wait's Location)
    path("store/items", views.StoreItems.as_view()),
    path("store/items/search", views.StoreSearchView.as_view()),
    path("store/namespaces", views.StoreNamespacesView.as_view()),
    path("mcp", views.McpEndpoint.as_view()),
    re_path(r"^(?P<path>.*)$", views.UnknownRoute.as_view()),  # last: what nothing above serves
]
