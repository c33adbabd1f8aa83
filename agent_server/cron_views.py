"""/langgraph/ crons (client.crons): thin views over agent_server.crons. Making, changing or deleting one needs the
key scope "runs", what its runs need (as /api/v1/schedules/ does); listing them "read"."""
from __future__ import annotations

from rest_framework.response import Response

from agent_server import crons
from agent_server.bodies import CronCreate, CronSearch, CronUpdate
from agent_server.http import READ, LangGraphView


class CronCreateView(LangGraphView):
    """POST /runs/crons, or /threads/{id}/runs/crons: a cron of the thread."""

    key_scope = "runs"

    def post(self, request, thread_id=None):
        return Response(crons.cron_as_dict(crons.cron_create(owner=request.user, body=self.body(CronCreate),
                                                             thread_id=thread_id)))


class CronSearchView(LangGraphView):
    key_scope = READ

    def post(self, request):
        return Response(crons.cron_search(user=request.user, body=self.body(CronSearch)))


class CronCount(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(CronSearch)
        return Response(len(crons.cron_search(user=request.user, body=body.model_copy(update={
            "limit": 10**6, "offset": 0, "select": None}))))


class CronDetail(LangGraphView):
    key_scope = "runs"

    def patch(self, request, cron_id):
        schedule = crons.cron_get(user=request.user, cron_id=cron_id)
        return Response(crons.cron_as_dict(crons.cron_update(schedule=schedule, body=self.body(CronUpdate))))

    def delete(self, request, cron_id):
        crons.cron_delete(schedule=crons.cron_get(user=request.user, cron_id=cron_id))
        return Response(status=204)
