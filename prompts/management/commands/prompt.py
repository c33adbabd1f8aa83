"""manage.py prompt: prompts from the terminal, through the same services and selectors as the API.

  prompt list
  prompt create NAME (--text TEXT | --file FILE) [--chat] [--config JSON] [--label L]... [--message M]
  prompt version NAME (--text TEXT | --file FILE) [--chat] [--config JSON] [--label L]... [--message M]
  prompt show NAME [--label L | --version N] [--variables JSON]
  prompt label NAME LABEL (VERSION | --split 3=90,4=10) [--protect | --unprotect]
"""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.cli import cli_user
from core.errors import ChatterError
from prompts.api.serializers import (
    PromptCreateSerializer,
    PromptLabelWriteSerializer,
    PromptVersionWriteSerializer,
)
from prompts.selectors import prompt_get, prompt_list
from prompts.services import prompt_create, prompt_label_set, prompt_resolve, prompt_version_create


class Command(BaseCommand):
    help = "Create prompts and versions, move labels (a rollback is a move), show a version by label or number."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", help="username (default: the first superuser)")
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        for name in ("create", "version"):
            write = sub.add_parser(name)
            write.add_argument("name")
            source = write.add_mutually_exclusive_group(required=True)
            source.add_argument("--text")
            source.add_argument("--file", help="a text file; with --chat, a JSON list of {role, content}")
            write.add_argument("--chat", action="store_true", help="chat messages instead of text")
            write.add_argument("--config", default="{}", help='JSON, e.g. {"model": "gpt-4o", "temperature": 0.2}')
            write.add_argument("--label", action="append", default=[], help="point this label at the new version")
            write.add_argument("--message", default="", help="a commit message")
        show = sub.add_parser("show")
        show.add_argument("name")
        show.add_argument("--label")
        show.add_argument("--version", type=int)
        show.add_argument("--variables", default="{}", help="JSON: fill the {{variables}}")
        label = sub.add_parser("label")
        label.add_argument("name")
        label.add_argument("label")
        label.add_argument("version", nargs="?", type=int)
        label.add_argument("--split", help="VERSION=WEIGHT,… e.g. 3=90,4=10")
        protect = label.add_mutually_exclusive_group()
        protect.add_argument("--protect", action="store_true", default=None)
        protect.add_argument("--unprotect", action="store_false", dest="protect")

    def handle(self, *args, **options) -> None:
        user = cli_user(options["user"])
        try:
            getattr(self, f"_{options['action']}")(user, options)
        except ChatterError as exc:
            details = "; ".join(f"{d['path']}: {d['message']}" for d in exc.as_dict()["error"]["details"])
            raise CommandError(f"{exc.message}{f' ({details})' if details else ''}") from None

    def _list(self, user, options) -> None:
        for prompt in prompt_list(user=user).prefetch_related("labels__version"):
            labels = ", ".join(f"{label.name}={label.target}" for label in prompt.labels.all())
            self.stdout.write(f"{prompt.name}  v{prompt.latest_version}  {labels}")

    def _version_input(self, options, serializer_class, **extra) -> dict:
        content = options["text"]
        if options["file"]:
            content = Path(options["file"]).read_text()
        if options["chat"]:
            try:
                content = json.loads(content)
            except json.JSONDecodeError as exc:
                raise CommandError(f"--chat needs a JSON list of messages: {exc}") from None
        try:
            config = json.loads(options["config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from None
        serializer = serializer_class(data={
            **extra, "type": "chat" if options["chat"] else "text", "prompt": content, "config": config,
            "labels": options["label"], "commit_message": options["message"]})
        if not serializer.is_valid():
            raise CommandError(f"invalid: {json.dumps(serializer.errors)}")
        return serializer.validated_data

    def _create(self, user, options) -> None:
        data = self._version_input(options, PromptCreateSerializer, name=options["name"])
        prompt_create(owner=user, name=data["name"], type=data["type"], content=data["prompt"],
                      config=data["config"], labels=data.get("labels", []), commit_message=data["commit_message"])
        self.stdout.write(f"{data['name']} v1")

    def _version(self, user, options) -> None:
        prompt = prompt_get(user=user, name=options["name"])
        data = self._version_input(options, PromptVersionWriteSerializer)
        version = prompt_version_create(prompt=prompt, type=data["type"], content=data["prompt"],
                                        config=data["config"], labels=data.get("labels", []),
                                        commit_message=data["commit_message"], actor=user)
        self.stdout.write(f"{prompt.name} v{version.version}")

    def _show(self, user, options) -> None:
        resolved = prompt_resolve(user=user, name=options["name"], label=options["label"],
                                  version=options["version"])
        self.stdout.write(f"{resolved.name} v{resolved.number}" + (f" ({resolved.label})" if resolved.label else ""))
        self.stdout.write(f"config: {json.dumps(resolved.config)}")
        for message in resolved.messages(json.loads(options["variables"])):
            self.stdout.write(f"[{message['role']}] {message['content']}")

    def _label(self, user, options) -> None:
        prompt = prompt_get(user=user, name=options["name"])
        data: dict = {} if options["protect"] is None else {"protected": options["protect"]}
        if options["split"]:
            try:
                data["split"] = dict(part.split("=") for part in options["split"].split(","))
            except ValueError:
                raise CommandError("--split is VERSION=WEIGHT,… e.g. 3=90,4=10") from None
        if options["version"] is not None:
            data["version"] = options["version"]
        serializer = PromptLabelWriteSerializer(data=data)
        if not serializer.is_valid():
            raise CommandError(f"invalid: {json.dumps(serializer.errors)}")
        label = prompt_label_set(prompt=prompt, name=options["label"], actor=user, **serializer.validated_data)
        protected = " (protected)" if label.protected else ""
        self.stdout.write(f"{prompt.name} {label.name} → {label.target}{protected}")
