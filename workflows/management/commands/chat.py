from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.services import conversation_delete
from core.cli import cli_user
from core.errors import ChatterError
from workflows.cli import EventPrinter, command_error, fail_unless_completed, follow_run
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_start_streamed

# The offline `local` model answers at once (CHATTER_LOCAL_TOKEN_DELAY_MS, 0 by default); in a terminal its reply
# is shown word by word at this pace, so a person sees it stream. Piped or captured output is not paced (scripts
# and tests wait for nothing), nor is a real model's, which streams at its own pace.
TERMINAL_TOKEN_DELAY_MS = 25


class Command(BaseCommand):
    help = ("One chat turn: streams the reply to the terminal and ends with its tokens and cost; a question the "
            "run asks (a human_input node) is asked here.")

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
        try:
            execution, feed = execution_start_streamed(ChatRequest(
                owner=user, message=options["text"],
                template=options["template"], conversation_id=options["conversation"], config=config,
            ))
        except ChatterError as exc:
            raise command_error(exc) from None
        paced = (execution.provider == "local" and not settings.CHATTER_LOCAL_TOKEN_DELAY_MS
                 and self.stdout.isatty())
        printer = EventPrinter(self.stdout, nodes=False, token_pause_s=TERMINAL_TOKEN_DELAY_MS / 1000 if paced else 0)
        follow_run(execution, feed, printer, ask=input, out=self.stdout)  # a question asked here, answered here
        execution.refresh_from_db()
        self.stdout.write(printer.summary(execution))
        if (execution.status == execution.Status.FAILED and not options["conversation"]
                and execution.llm_calls == 0 and execution.conversation is not None):
            # Nothing reached a model (e.g. the provider is unreachable): the conversation this turn opened would
            # hold only the question and an empty reply. The failed run itself stays, with its error.
            conversation_delete(conversation=execution.conversation, actor=user)
            self.stdout.write("nothing saved: the conversation opened for this turn is removed")
        else:
            self.stdout.write(f"conversation {execution.conversation_id}")
        fail_unless_completed(execution)
