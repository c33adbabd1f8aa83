import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.cli import cli_user
from core.errors import ChatterError
from workflows.cli import EventPrinter, command_error, fail_unless_completed
from workflows.realtime import feed_blocking
from workflows.services.run_requests import ExecutionRequest
from workflows.services.runs import execution_start_streamed


def _json_argument(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None


class Command(BaseCommand):
    help = "Run a workflow (template, definition or graph file), showing node progress and the totals."

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--template", help="template key")
        source.add_argument("--definition", help="definition id")
        source.add_argument("--file", help="a graph JSON file")
        parser.add_argument("--input", default="{}", help='JSON: {"message": "...", "variables": {...}}')
        parser.add_argument("--config", default="{}", help="JSON run config (provider, model, limits, ...)")
        parser.add_argument("--conversation", help="save the turn in this conversation (id)")
        parser.add_argument("--user", help="username (default: the first superuser)")

    def handle(self, *args, **options):
        user = cli_user(options["user"])
        run_input = _json_argument(options["input"], "--input")
        if not isinstance(run_input, dict):
            raise CommandError('--input must be a JSON object like {"message": "..."}')
        graph = None
        if options["file"]:
            path = Path(options["file"])
            if not path.is_file():
                raise CommandError(f"no such file: {path}")
            graph = _json_argument(path.read_text(), str(path))
        try:
            execution, feed = execution_start_streamed(ExecutionRequest(
                owner=user, template=options["template"],
                definition_id=options["definition"], graph=graph, message=run_input.get("message"),
                variables=run_input.get("variables"), conversation_id=options["conversation"],
                config=_json_argument(options["config"], "--config"),
            ))
        except ChatterError as exc:
            raise command_error(exc) from None
        printer = EventPrinter(self.stdout, nodes=True)
        for envelope in feed_blocking(feed):
            printer(envelope)
        execution.refresh_from_db()
        if execution.output_data.get("content"):
            self.stdout.write(f"output: {execution.output_data['content']}")
        self.stdout.write(printer.summary(execution))
        fail_unless_completed(execution)
