from contextlib import contextmanager

from django.conf import settings
from django.core.management.base import BaseCommand

from chatter_project.errors import ChatterError
from workflows.cli import EventPrinter, cli_user, command_error, fail_unless_completed
from workflows.realtime import feed_blocking
from workflows.services.runs import execution_start_streamed

# The offline `local` model's pace in a terminal, as `make run` sets it for the live page: word by word, so a
# person sees the reply stream. Piped or captured output gets no delay (scripts and tests wait for nothing).
TERMINAL_TOKEN_DELAY_MS = 25


@contextmanager
def local_model_paced_for(stream):
    """Within: the local model waits CHATTER_LOCAL_TOKEN_DELAY_MS between words, or TERMINAL_TOKEN_DELAY_MS
    when that is 0 and `stream` is a terminal. The setting is this command process's own; it is put back."""
    before = settings.CHATTER_LOCAL_TOKEN_DELAY_MS
    if not before and stream.isatty():
        settings.CHATTER_LOCAL_TOKEN_DELAY_MS = TERMINAL_TOKEN_DELAY_MS
    try:
        yield
    finally:
        settings.CHATTER_LOCAL_TOKEN_DELAY_MS = before


class Command(BaseCommand):
    help = "One chat turn: streams the reply to the terminal and ends with its tokens and cost."

    def add_arguments(self, parser):
        parser.add_argument("text")
        parser.add_argument("--conversation", help="continue this conversation (id)")
        parser.add_argument("--template", default=None, help="template key (default universal_chat)")
        parser.add_argument("--provider", help="local (default), openai or anthropic")
        parser.add_argument("--model")
        parser.add_argument("--user", help="username (default: the first superuser)")

    def handle(self, *args, **options):
        user = cli_user(options["user"])
        config = {key: options[key] for key in ("provider", "model") if options[key]}
        with local_model_paced_for(self.stdout):
            try:
                execution, feed = execution_start_streamed(
                    owner=user, chat=True, message=options["text"],
                    template=options["template"], conversation_id=options["conversation"], config=config,
                )
            except ChatterError as exc:
                raise command_error(exc) from None
            printer = EventPrinter(self.stdout, nodes=False)
            for envelope in feed_blocking(feed):
                printer(envelope)
        execution.refresh_from_db()
        self.stdout.write(printer.summary(execution))
        self.stdout.write(f"conversation {execution.conversation_id}")
        fail_unless_completed(execution)
