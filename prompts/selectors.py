"""Reads of prompts, always restricted to the owner: another user's prompt is not found."""
from __future__ import annotations

from django.db.models import Max, QuerySet

from core.errors import NotFound
from prompts.models import DEFAULT_LABEL, Prompt, PromptLabel, PromptVersion


def prompt_list(*, user) -> QuerySet[Prompt]:
    return Prompt.objects.filter(owner=user).annotate(latest_version=Max("versions__version"))


def prompt_get(*, user, name: str) -> Prompt:
    prompt = prompt_list(user=user).filter(name=name).first()
    if prompt is None:
        raise NotFound(f"prompt {name!r} not found")
    return prompt


def prompt_label_get(*, prompt: Prompt, name: str) -> PromptLabel:
    label = prompt.labels.select_related("version").filter(name=name).first()
    if label is None:
        raise NotFound(f"prompt {prompt.name!r} has no label {name!r}")
    return label


def prompt_version_get(*, prompt: Prompt, version: int) -> PromptVersion:
    found = prompt.versions.filter(version=version).first()
    if found is None:
        raise NotFound(f"prompt {prompt.name!r} has no version {version}")
    return found


def prompt_reference_check(*, user, name: str, label: str | None = None, version: int | None = None) -> None:
    """That `user` may fetch the prompt a graph names (its version, or its label: default `production`), as its run
    will (prompts.services.prompt_resolve); else NotFound, the same for another user's prompt as for a missing
    one."""
    prompt = prompt_get(user=user, name=name)
    if version is not None:
        prompt_version_get(prompt=prompt, version=version)
    else:
        prompt_label_get(prompt=prompt, name=label or DEFAULT_LABEL)
