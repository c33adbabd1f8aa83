"""Writes of prompts: versions are numbered under a lock on their prompt, `latest` moves with each, and every
label move (a rollback is one) is audited in the same transaction. A fetch by label (prompt_resolve) is here
too: under a split it may write the conversation's draw."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from audit.services import audit_record
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from prompts.models import DEFAULT_LABEL, LATEST, Prompt, PromptAssignment, PromptLabel, PromptVersion
from prompts.selectors import prompt_get, prompt_label_get, prompt_version_get
from prompts.templating import prompt_compile

_choice = random.SystemRandom()


def prompt_create(*, owner, name: str, description: str = "", type: str, content, config: dict,
                  labels: list[str] = (), commit_message: str = "", ip: str | None = None) -> Prompt:
    """A new prompt with its version 1 (labelled `latest` and `labels`); a name the owner already uses is a 400,
    also when another request creates it at the same moment (the unique constraint decides, as for datasets)."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                prompt = Prompt.objects.create(owner=owner, name=name, description=description)
        except IntegrityError:
            raise InvalidInput(f"you already have a prompt named {name!r}: save a new version of it",
                               details={"name": ["already exists"]}) from None
        prompt_version_create(prompt=prompt, type=type, content=content, config=config, labels=labels,
                              commit_message=commit_message, actor=owner, ip=ip, created=True)
    return prompt


def prompt_update(*, prompt: Prompt, description: str) -> Prompt:
    Prompt.objects.filter(pk=prompt.pk).update(description=description)
    prompt.refresh_from_db()
    return prompt


def prompt_delete(*, prompt: Prompt, actor, ip: str | None = None) -> None:
    """Its versions and labels go with it; the LLM calls and runs that used them keep their figures (their
    reference to the version is cleared)."""
    with transaction.atomic():
        if not actor.is_staff and prompt.labels.filter(protected=True).exists():
            raise Forbidden("the prompt has a protected label: only staff may delete it")
        audit_record(action="prompt.deleted", actor=actor, target=prompt, ip=ip,
                     data={"name": prompt.name, "versions": prompt.versions.count()})
        prompt.delete()


def prompt_version_create(*, prompt: Prompt, type: str, content, config: dict, labels: list[str] = (),
                          commit_message: str = "", actor, ip: str | None = None,
                          created: bool = False) -> PromptVersion:
    """The next version (numbered under the prompt's row lock), `latest` moved to it, and `labels` pointed at it."""
    with transaction.atomic():
        Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
        last = prompt.versions.order_by("-version").values_list("version", flat=True).first() or 0
        version = PromptVersion.objects.create(prompt=prompt, version=last + 1, type=type, content=content,
                                               config=config, commit_message=commit_message, created_by=actor)
        PromptLabel.objects.update_or_create(prompt=prompt, name=LATEST,
                                             defaults={"version": version, "split": {}, "updated_by": actor})
        Prompt.objects.filter(pk=prompt.pk).update(updated_at=version.created_at)
        for name in labels:
            if name != LATEST:
                prompt_label_set(prompt=prompt, name=name, version=version.version, actor=actor, ip=ip)
        audit_record(action="prompt.created" if created else "prompt.version_created", actor=actor, target=prompt,
                     ip=ip, data={"name": prompt.name, "version": version.version})
    return version


def prompt_label_set(*, prompt: Prompt, name: str, version: int | None = None, split: dict | None = None,
                     protected: bool | None = None, actor, ip: str | None = None) -> PromptLabel:
    """Point a label at one version or at a split ({"3": 90, "4": 10}); a rollback is this, to an older version.
    `latest` moves by itself; a protected label, and the protection itself, are staff's to change."""
    if name == LATEST:
        raise InvalidInput("`latest` moves by itself to each new version", details={"name": ["read-only label"]})
    if (version is None) == (not split):
        raise InvalidInput("give version or split (one of them)", details={"version": ["version or split"]})
    if protected is not None and not actor.is_staff:
        raise Forbidden("only staff may protect or unprotect a label")
    with transaction.atomic():
        label = PromptLabel.objects.select_for_update().filter(prompt=prompt, name=name).first()
        if label is not None and label.protected and not actor.is_staff:
            raise Forbidden(f"label {name!r} is protected: only staff may move it")
        numbers = [version] if version is not None else [_split_number(key) for key in split]
        found = {v.version: v for v in prompt.versions.filter(version__in=numbers)}
        missing = sorted(set(numbers) - set(found))
        if missing:
            raise InvalidInput(f"prompt {prompt.name!r} has no version {', '.join(map(str, missing))}",
                               details={"split" if split else "version": ["no such version"]})
        before = _label_target(label) if label is not None else None
        values = {"version": found[version] if version is not None else None,
                  "split": {str(_split_number(k)): w for k, w in split.items()} if split else {},
                  "updated_by": actor}
        if protected is not None:
            values["protected"] = protected
        if label is None:
            label = PromptLabel.objects.create(prompt=prompt, name=name, **values)
        else:
            for field, value in values.items():
                setattr(label, field, value)
            label.save()
        audit_record(action="prompt.label_moved", actor=actor, target=prompt, ip=ip,
                     data={"name": prompt.name, "label": name, "from": before, "to": _label_target(label),
                           "protected": label.protected})
    return label


def prompt_label_delete(*, label: PromptLabel, actor, ip: str | None = None) -> None:
    if label.name == LATEST:
        raise InvalidInput("`latest` cannot be deleted", details={"name": ["read-only label"]})
    if label.protected and not actor.is_staff:
        raise Forbidden(f"label {label.name!r} is protected: only staff may delete it")
    with transaction.atomic():
        audit_record(action="prompt.label_deleted", actor=actor, target=label.prompt, ip=ip,
                     data={"name": label.prompt.name, "label": label.name, "from": _label_target(label)})
        label.delete()


def _split_number(key) -> int:
    try:
        number = int(key)
    except (TypeError, ValueError):
        raise InvalidInput(f"split keys are version numbers, not {key!r}", details={"split": ["bad key"]}) from None
    return number


def _label_target(label: PromptLabel) -> dict:
    if label.split:
        return {"split": dict(label.split)}
    return {"version": label.version.version if label.version_id else None}


def prompt_version_assigned(*, label: PromptLabel, conversation_id=None) -> PromptVersion:
    """The version a label gives now: its one version; under a split, the version drawn by weight, kept per
    conversation (its first draw, while the split still names that version) so every turn uses the same one."""
    if not label.split:
        return label.version
    if conversation_id is not None:
        kept = PromptAssignment.objects.filter(label=label, conversation_id=conversation_id).select_related(
            "version").first()
        if kept is not None and str(kept.version.version) in label.split:
            return kept.version
    version = _drawn(label)
    if conversation_id is None:
        return version
    if kept is not None:  # drawn under a split that no longer names its version: this draw replaces it
        PromptAssignment.objects.filter(pk=kept.pk, version_id=kept.version_id).update(version=version)
    else:
        try:
            with transaction.atomic():
                PromptAssignment.objects.create(label=label, conversation_id=conversation_id, version=version)
        except IntegrityError:  # another turn of the conversation drew at the same time: the first draw holds
            pass
    return PromptAssignment.objects.select_related("version").get(label=label,
                                                                  conversation_id=conversation_id).version


def _drawn(label: PromptLabel) -> PromptVersion:
    """A version of the label's split, drawn by weight. A split stored before the API checked splits (8e15600) may
    name one version ({"1": 0}: "1" and "01" merged): it gives that version, the only one it names; one whose
    versions all weigh 0 gives none, a 409 naming the label to set again (not random's ValueError, a 500)."""
    numbers = [int(key) for key in label.split]
    weights = [label.split[str(n)] for n in numbers]
    if len(numbers) > 1 and sum(weights) <= 0:
        raise Conflict(f"label {label.name!r} is a split whose weights are all 0, which gives no version: "
                       f"set the label again (a version, or a split with weights)")
    number = numbers[0] if len(numbers) == 1 else _choice.choices(numbers, weights=weights)[0]
    version = PromptVersion.objects.filter(prompt_id=label.prompt_id, version=number).first()
    if version is None:
        raise NotFound(f"version {number} of the split is gone")
    return version


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
