"""django-q2 tasks of budget alerts (their webhooks are sent by webhooks.tasks): take ids, idempotent."""
from __future__ import annotations

from django.core.mail import send_mail

from budgets.models import Budget


def alert_email_send(budget_id: str, payload: dict) -> None:
    budget = Budget.objects.select_related("owner").filter(pk=budget_id).first()
    if budget is None or not budget.owner.email:
        return
    limit = f"${payload['limit_usd']}" if payload.get("limit_usd") else f"{payload.get('limit_tokens')} tokens"
    send_mail(subject=f"[Chatter] budget {budget.name or budget.pk}: {payload['threshold']}% reached",
              message=(f"Spend on budget {budget.name or budget.pk} ({budget.scope} {budget.target_id or '*'}, per "
                       f"{budget.period}) reached {payload['percent']}% of {limit} in the period from "
                       f"{payload['period_start']}."),
              from_email=None, recipient_list=[budget.owner.email])
