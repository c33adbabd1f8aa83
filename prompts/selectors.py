"""Reads of prompts, always restricted to the owner: another user's prompt is not found."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Max, QuerySet

from chatter_project.errors import InvalidInput, NotFound
from prompts.models import DEFAULT_LABEL, Prompt, PromptLabel, PromptVersion
from prompts.services import prompt_version_assigned
from prompts.templating import prompt_compile


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


@dataclass(frozen=True)
class ResolvedPrompt:
    """A version as fetched by label or number: what a run sends, and what it records it used."""

    version: PromptVersion
    label: str | None

    @property
    def name(self) -> str:
        return self.version.prompt.name

    @property
    def number(self) -> int:
        return self.version.version

    @property
    def config(self) -> dict:
        return dict(self.version.config)

    def messages(self, variables: dict[str, Any] | None = None) -> list[dict]:
        """The version's messages with {{variables}} filled ([{"role", "content"}])."""
        return prompt_compile(self.version.content, variables or {})


def prompt_resolve(*, user, name: str, label: str | None = None, version: int | None = None,
                   conversation_id=None) -> ResolvedPrompt:
    """Fetch by name and label (default `production`) or by version number. A split label draws a version by
    weight, the same one for every turn of a conversation (prompts.services.prompt_version_assigned)."""
    if label is not None and version is not None:
        raise InvalidInput("give label or version, not both", details={"version": ["label or version"]})
    prompt = prompt_get(user=user, name=name)
    if version is not None:
        found = prompt_version_get(prompt=prompt, version=version)
    else:
        label = label or DEFAULT_LABEL
        found = prompt_version_assigned(label=prompt_label_get(prompt=prompt, name=label),
                                        conversation_id=conversation_id)
    found.prompt = prompt
    return ResolvedPrompt(version=found, label=label)
