from django.core.management.base import BaseCommand, CommandError

from chatter_project.errors import ChatterError
from workflows.cli import EventPrinter, cli_user, fail_unless_completed
from workflows.realtime import feed_blocking
from workflows.services.runs import execution_start_streamed


class Command(BaseCommand):
    help = "One chat turn: streams the reply to the terminal and ends with its tokens and cost."

    def add_arguments(self, parser):
        parser.add_argument("text")
        parser.add_argument("--conversation", help="continue this conversation (id)")
        parser.add_argument("--template", default=None, help="template key (default universal_chat)")
        parser.add_argument("--provider")
        parser.add_argument("--model")
        parser.add_argument("--user", help="username (default: the first superuser)")

    def handle(self, *args, **options):
        user = cli_user(options["user"])
        config = {key: options[key] for key in ("provider", "model") if options[key]}
        try:
            execution, feed = execution_start_streamed(
                owner=user, chat=True, message=options["text"],
                template=options["template"], conversation_id=options["conversation"], config=config,
            )
        except ChatterError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from None
        printer = EventPrinter(self.stdout, nodes=False)
        for envelope in feed_blocking(feed):
            printer(envelope)
        execution.refresh_from_db()
        self.stdout.write(printer.summary(execution))
        self.stdout.write(f"conversation {execution.conversation_id}")
        fail_unless_completed(execution)
