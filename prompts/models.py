"""Prompts: a named prompt of one owner, its immutable versions 1, 2, 3…, the labels that point at them
(one version, or a weighted split of several), and the version each conversation was assigned under a split."""
import uuid

from django.conf import settings
from django.db import models

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
LATEST = "latest"  # the label that moves by itself to every new version
DEFAULT_LABEL = "production"  # what a fetch by name alone gets


class ImmutableVersionError(Exception):
    pass


class Prompt(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prompts")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="prompt_name_unique_per_owner")]

    def __str__(self) -> str:
        return self.name


class PromptVersion(models.Model):
    """Written once, never changed: a run that used version 3 used exactly this text and config."""

    class Type(models.TextChoices):
        TEXT = "text"  # `prompt` is a string (sent as the system message)
        CHAT = "chat"  # `prompt` is a list of {"role", "content"} messages

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=8, choices=Type.choices)
    content = models.JSONField()  # str (text) or [{"role", "content"}] (chat), with {{variables}}
    config = models.JSONField(default=dict, blank=True)  # model, provider, temperature, max_tokens, tools…
    commit_message = models.CharField(max_length=255, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prompt", "-version"]
        constraints = [models.UniqueConstraint(fields=["prompt", "version"], name="prompt_version_unique")]

    def __str__(self) -> str:
        return f"{self.prompt_id} v{self.version}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableVersionError("prompt versions are immutable: save a new version")
        super().save(*args, **kwargs)


class PromptLabel(models.Model):
    """A name that points at one version (`version`) or at a weighted split of versions (`split`: {"3": 90,
    "4": 10}, version numbers to weights; `version` is then null). A protected label is moved by staff only."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=100)
    version = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    split = models.JSONField(default=dict, blank=True)
    protected = models.BooleanField(default=False)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prompt", "name"]
        constraints = [models.UniqueConstraint(fields=["prompt", "name"], name="prompt_label_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        if self.split:
            return ", ".join(f"v{number}: {weight}" for number, weight in self.split.items())
        return f"v{self.version.version}" if self.version_id else ""


class PromptAssignment(models.Model):
    """The version a conversation was given under a split label: every later turn uses it, whatever the weights
    become, while the label stays a split that includes it."""

    label = models.ForeignKey(PromptLabel, on_delete=models.CASCADE, related_name="assignments")
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE,
                                     related_name="prompt_assignments")
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="assignments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["label", "conversation"], name="prompt_assignment_unique")]

    def __str__(self) -> str:
        return f"{self.conversation_id} → v{self.version_id}"
