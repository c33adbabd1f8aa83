"""Who may set a budget on what: the target a new budget names, checked against the user who sets it."""
from __future__ import annotations

import uuid
from typing import Protocol

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured

from budgets.models import Budget
from core.errors import InvalidInput
from keys.models import ApiToken

STAFF_SCOPES = (Budget.Scope.GROUP, Budget.Scope.GLOBAL)


class TemplateLookup(Protocol):
    def __call__(self, *, owner, key_or_id: str) -> object | None: ...


_templates: TemplateLookup | None = None


def template_lookup_register(lookup: TemplateLookup) -> None:
    """Make `lookup` the one budget_target asks which template (its id) a user may see by key or id, None when
    none. Templates are kept above budgets (workflows), so that app registers it at start-up
    (workflows.apps.WorkflowsConfig.ready); budgets never imports it."""
    global _templates
    _templates = lookup


def budget_target(*, user, scope: str, target_id: str | None) -> str:
    """The target's id as budgets keep it, once checked: what the user may not govern is a 400 on the field that
    names it (the same whether it does not exist or is another's, so nothing is revealed). A user governs their
    own spend: themselves, their own keys, their own runs of a template they can see; staff govern anyone's."""
    if scope in STAFF_SCOPES and not user.is_staff:
        raise InvalidInput("a budget on a group or on everyone binds other users: only staff set one; "
                           "set a user budget for your own runs", details={"scope": ["staff only"]})
    if scope == Budget.Scope.GLOBAL:
        return ""
    if scope == Budget.Scope.USER:
        target = target_id or str(user.pk)
        if target != str(user.pk) and not (user.is_staff and get_user_model().objects.filter(
                pk=target if target.isdigit() else None).exists()):
            raise _not_yours("user")
        return target
    if not target_id:
        raise InvalidInput("target_id is required for this scope", details={"target_id": ["required"]})
    if scope == Budget.Scope.GROUP:
        if not (target_id.isdigit() and Group.objects.filter(pk=target_id).exists()):
            raise _not_yours("group")
        return target_id
    if scope == Budget.Scope.KEY:
        try:
            uid = uuid.UUID(target_id)
        except ValueError:
            raise _not_yours("API key") from None
        keys = ApiToken.objects.filter(uid=uid)
        if not (keys.filter(user=user).exists() or (user.is_staff and keys.exists())):
            raise _not_yours("API key")
        return str(uid)
    if _templates is None:
        raise ImproperlyConfigured("no template lookup is registered: budgets on a template need the app that keeps "
                                   "templates ('workflows' in INSTALLED_APPS)")
    template_pk = _templates(owner=user, key_or_id=target_id)
    if template_pk is None:
        raise _not_yours("template")
    return str(template_pk)


def _not_yours(kind: str) -> InvalidInput:
    message = f"names no {kind} you may set a budget on"
    return InvalidInput(f"target_id {message}", details={"target_id": [message]})
