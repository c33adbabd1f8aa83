"""A run's feed opened just as the run ends (workflows/realtime.py): whatever moment the run's terminal transaction
commits between the feed's reads, the feed never takes the run for one whose log was pruned, so it never closes
with nothing (seen once as a watcher in tests/realtime/test_scale_out.py that got no event at all).

PostgreSQL only: the run ends on a connection of its own while the feed's connection is between two reads."""
import os
import threading

import pytest
from django.db import connection, connections

from workflows import realtime
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="needs PostgreSQL (make test's second phase)"),
]


def end_in_another_connection(execution_id) -> None:
    def run() -> None:
        try:
            execution_run(execution_id=execution_id)
        finally:
            connections.close_all()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)


def test_a_run_that_ends_between_the_feeds_reads_is_never_taken_for_a_pruned_one(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hello there"))  # pending: nothing persisted yet
    reads = []

    def end_the_run_after_the_first_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        reads.append(sql)
        if len(reads) == 1:
            end_in_another_connection(execution.pk)  # commits while the feed is between its two reads
        return result

    with connection.execute_wrapper(end_the_run_after_the_first_read):
        terminal = realtime._terminal_seq.func(execution.pk)  # the sync read the feed runs in its database thread

    execution.refresh_from_db()
    assert execution.status == "completed"
    last = execution.events.order_by("-seq").first()
    # Either still running as far as the feed could tell (it then reads the log and goes on), or ended with its
    # terminal event's seq: never 0, which would mean "ended, log pruned" and close the feed empty.
    assert terminal in (None, last.seq), (terminal, reads)
