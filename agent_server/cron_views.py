"""/langgraph/ crons (client.crons): thin views over agent_server.crons. Making, changing or deleting one needs the
key scope "runs", what its runs need (as /api/v1/schedules/ does); listing them "read"."""
from __future__ import annotations

from agent_server import crons
from agent_server.bodies import CronCreate, CronSearch, CronUpdate
from agent_server.http import body_of, langgraph_endpoint


@langgraph_endpoint("POST", scope="runs")
def cron_create(request, user):
    return crons.cron_as_dict(crons.cron_create(owner=user, body=body_of(request, CronCreate)))


@langgraph_endpoint("POST", scope="runs")
def thread_cron_create(request, user, thread_id):
    return crons.cron_as_dict(crons.cron_create(owner=user, body=body_of(request, CronCreate), thread_id=thread_id))


@langgraph_endpoint("POST", scope="read")
def cron_search(request, user):
    return crons.cron_search(user=user, body=body_of(request, CronSearch))


@langgraph_endpoint("POST", scope="read")
def cron_count(request, user):
    body = body_of(request, CronSearch)
    return len(crons.cron_search(user=user, body=body.model_copy(update={"limit": 10**6, "offset": 0,
                                                                         "select": None})))


@langgraph_endpoint("PATCH", "DELETE", scope="runs")
def cron_detail(request, user, cron_id):
    schedule = crons.cron_get(user=user, cron_id=cron_id)
    if request.method == "DELETE":
        crons.cron_delete(schedule=schedule)
        return None
    return crons.cron_as_dict(crons.cron_update(schedule=schedule, body=body_of(request, CronUpdate)))
