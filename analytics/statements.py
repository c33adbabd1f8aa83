"""Analytics' SQL statements that the ORM cannot say: fixed text with placeholders, the same on PostgreSQL and
SQLite (workflows.statements and conversations.statements keep theirs the same way). Rows go in at
`VALUES {values}` (core.db.Insert), their values as the ORM sends them (core.db.value_converter);
tests/analytics/test_statements.py runs each statement on both databases and checks its columns are the model's.

The two upserts add to counters as they collide, in one statement, so that concurrent runs never lose an increment
(`update()` with `F()` cannot insert a missing row; `bulk_create(update_conflicts=True)` cannot add)."""
from __future__ import annotations

from typing import Any

from analytics.models import TemplateAnalytics, UsageRollup
from core.db import Insert

USAGE_ROLLUP_COLUMNS = ("key", "day", "owner_id", "provider", "model", "template_id", "conversation_id", "api_key_id",
                        "executions", "completed_executions", "failed_executions", "cancelled_executions",
                        "messages", "llm_calls", "prompt_tokens", "completion_tokens", "total_tokens",
                        "cached_prompt_tokens", "reasoning_tokens", "cost")
# A row of a key not yet stored is inserted; a stored one adds the new row's counters to its own.
USAGE_ROLLUPS_ADD = (
    'INSERT INTO "analytics_usagerollup" ("key", "day", "owner_id", "provider", "model", "template_id", '
    '"conversation_id", "api_key_id", "executions", "completed_executions", "failed_executions", '
    '"cancelled_executions", "messages", "llm_calls", "prompt_tokens", "completion_tokens", "total_tokens", '
    '"cached_prompt_tokens", "reasoning_tokens", "cost") VALUES {values} '
    'ON CONFLICT ("key") DO UPDATE SET '
    '"executions" = "analytics_usagerollup"."executions" + excluded."executions", '
    '"completed_executions" = "analytics_usagerollup"."completed_executions" + excluded."completed_executions", '
    '"failed_executions" = "analytics_usagerollup"."failed_executions" + excluded."failed_executions", '
    '"cancelled_executions" = "analytics_usagerollup"."cancelled_executions" + excluded."cancelled_executions", '
    '"messages" = "analytics_usagerollup"."messages" + excluded."messages", '
    '"llm_calls" = "analytics_usagerollup"."llm_calls" + excluded."llm_calls", '
    '"prompt_tokens" = "analytics_usagerollup"."prompt_tokens" + excluded."prompt_tokens", '
    '"completion_tokens" = "analytics_usagerollup"."completion_tokens" + excluded."completion_tokens", '
    '"total_tokens" = "analytics_usagerollup"."total_tokens" + excluded."total_tokens", '
    '"cached_prompt_tokens" = "analytics_usagerollup"."cached_prompt_tokens" + excluded."cached_prompt_tokens", '
    '"reasoning_tokens" = "analytics_usagerollup"."reasoning_tokens" + excluded."reasoning_tokens", '
    '"cost" = "analytics_usagerollup"."cost" + excluded."cost"')

TEMPLATE_ANALYTICS_COLUMNS = ("template_id", "slot", "total_executions", "successful_executions", "failed_executions",
                              "cancelled_executions", "total_execution_time_ms", "prompt_tokens",
                              "completion_tokens", "total_tokens", "total_cost", "last_used_at", "last_success_at",
                              "last_failure_at")
# A slot of a template's figures is made by the first run that picks it and added to by the next; a moment given
# (not NULL) replaces the stored one.
TEMPLATE_ANALYTICS_ADD = (
    'INSERT INTO "analytics_templateanalytics" ("template_id", "slot", "total_executions", "successful_executions", '
    '"failed_executions", "cancelled_executions", "total_execution_time_ms", "prompt_tokens", "completion_tokens", '
    '"total_tokens", "total_cost", "last_used_at", "last_success_at", "last_failure_at") VALUES {values} '
    'ON CONFLICT ("template_id", "slot") DO UPDATE SET '
    '"total_executions" = "analytics_templateanalytics"."total_executions" + excluded."total_executions", '
    '"successful_executions" = "analytics_templateanalytics"."successful_executions" '
    '+ excluded."successful_executions", '
    '"failed_executions" = "analytics_templateanalytics"."failed_executions" + excluded."failed_executions", '
    '"cancelled_executions" = "analytics_templateanalytics"."cancelled_executions" '
    '+ excluded."cancelled_executions", '
    '"total_execution_time_ms" = "analytics_templateanalytics"."total_execution_time_ms" '
    '+ excluded."total_execution_time_ms", '
    '"prompt_tokens" = "analytics_templateanalytics"."prompt_tokens" + excluded."prompt_tokens", '
    '"completion_tokens" = "analytics_templateanalytics"."completion_tokens" + excluded."completion_tokens", '
    '"total_tokens" = "analytics_templateanalytics"."total_tokens" + excluded."total_tokens", '
    '"total_cost" = "analytics_templateanalytics"."total_cost" + excluded."total_cost", '
    '"last_used_at" = COALESCE(excluded."last_used_at", "analytics_templateanalytics"."last_used_at"), '
    '"last_success_at" = COALESCE(excluded."last_success_at", "analytics_templateanalytics"."last_success_at"), '
    '"last_failure_at" = COALESCE(excluded."last_failure_at", "analytics_templateanalytics"."last_failure_at")')

_usage_rollups_add = Insert(UsageRollup, USAGE_ROLLUP_COLUMNS, USAGE_ROLLUPS_ADD)
_template_analytics_add = Insert(TemplateAnalytics, TEMPLATE_ANALYTICS_COLUMNS, TEMPLATE_ANALYTICS_ADD)


def usage_rollups_add(rows: list[dict[str, Any]]) -> tuple[str, list]:
    """USAGE_ROLLUPS_ADD for `rows` (dicts by attname, every column given), and its parameters."""
    return _usage_rollups_add.bound(rows)


def template_analytics_add(row: dict[str, Any]) -> tuple[str, list]:
    """TEMPLATE_ANALYTICS_ADD for one slot's `row` (by attname, every column given), and its parameters."""
    return _template_analytics_add.bound([row])
