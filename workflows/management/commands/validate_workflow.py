"""`manage.py validate_workflow graph.json`: prints "valid", or one `path: code: message` line per error and exits 1."""
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from engine.graph import validate_graph


class Command(BaseCommand):
    help = "Validate a workflow graph file (flat or React-Flow JSON); exit 1 when it is invalid."

    def add_arguments(self, parser):
        parser.add_argument("path", help="a JSON file holding the graph: {\"nodes\": [...], \"edges\": [...]}")

    def handle(self, *args, path: str, **options):
        try:
            with open(path, encoding="utf-8") as graph_file:
                raw = json.load(graph_file)
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file", returncode=1)
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot read the file ({exc})", returncode=1)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CommandError(f"{path}: not valid JSON ({exc})", returncode=1)

        errors = validate_graph(raw)
        if not errors:
            self.stdout.write("valid")
            return
        for error in errors:
            self.stderr.write(f"{error['path'] or 'graph'}: {error['code']}: {error['message']}")
        # Not CommandError: its extra "CommandError: …" line would break the one-line-per-error output.
        sys.exit(1)
