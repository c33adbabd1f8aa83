"""The statements of budgets that the ORM says several times slower on every run (bench/RESULTS.md, "Named
statements of conversations, budgets and keys"): which active budgets a run falls under, fixed SQL with placeholders.

Parameters, in order (`matching_params`): the owner's id (the budgets of the owner, or set by staff), the owner's
id as text (a `user` budget's target), the owner's id again (their groups), the API key's uid or NULL, the
template's id or NULL. A budget binds a run only when staff set it or the run is its owner's: no user's budget
reaches another's runs.
"""
from __future__ import annotations

_MATCHING = """
"budgets_budget"."is_active" AND ("budgets_budget"."set_by_staff" OR "budgets_budget"."owner_id" = %s) AND (
    "budgets_budget"."scope" = 'global'
    OR ("budgets_budget"."scope" = 'user' AND "budgets_budget"."target_id" = %s)
    OR ("budgets_budget"."scope" = 'group' AND "budgets_budget"."target_id" IN (
        SELECT CAST("auth_user_groups"."group_id" AS VARCHAR(64)) FROM "auth_user_groups"
        WHERE "auth_user_groups"."user_id" = %s))
    OR ("budgets_budget"."scope" = 'key' AND "budgets_budget"."target_id" = %s)
    OR ("budgets_budget"."scope" = 'template' AND "budgets_budget"."target_id" = %s))
"""

BUDGETS_MATCHING = f'SELECT * FROM "budgets_budget" WHERE {_MATCHING}'
# Whether any applies: most runs fall under none, and this answer costs less than an empty BUDGETS_MATCHING read
# as instances (core.db.instances).
ANY_BUDGET = f'SELECT EXISTS (SELECT 1 FROM "budgets_budget" WHERE {_MATCHING})'


def matching_params(*, owner_id: int, api_key_uid=None, template_id=None) -> list:
    return [owner_id, str(owner_id), owner_id, None if api_key_uid is None else str(api_key_uid),
            None if template_id is None else str(template_id)]
