"""Webhooks' SQL statement that the ORM cannot say: a delivery's row riding on another write (core.db.statements_run:
a run's last), fixed text with its row at `VALUES {values}` (core.db.Insert), as workflows.statements keeps the run
path's. tests/agent_server/test_webhooks_and_delays.py checks its columns are the model's."""
from core.db import Insert
from webhooks.models import WebhookDelivery

DELIVERY_COLUMNS = ("id", "subject_type", "subject_id", "url", "event", "payload", "status", "attempts",
                    "last_status_code", "last_error", "log", "next_attempt_at", "trace_context", "delivered_at",
                    "created_at")
DELIVERY_INSERT = (
    'INSERT INTO "webhooks_webhookdelivery" ("id", "subject_type", "subject_id", "url", "event", "payload", '
    '"status", "attempts", "last_status_code", "last_error", "log", "next_attempt_at", "trace_context", '
    '"delivered_at", "created_at") VALUES {values}')

delivery_insert = Insert(WebhookDelivery, DELIVERY_COLUMNS, DELIVERY_INSERT)
