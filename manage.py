#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    """Run administrative tasks."""
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatter_project.settings')
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Are you sure it's installed and "
            "available on your PYTHONPATH environment variable? Did you "
            "forget to activate a virtual environment?"
        ) from exc
    try:
        execute_from_command_line(sys.argv)
    finally:
        from core.tracing import COMMAND_FLUSH_S, command_tracing_end

        runner = sys.modules.get("workflows.runner")  # (loaded: the command may have run runs on its threads)
        if runner is not None:  # a run's spans end after its terminal event, which a command may end on
            runner.runs_settled(timeout_s=COMMAND_FLUSH_S)
        command_tracing_end()  # (its last spans: waited for briefly, not for the exporter's retries)


if __name__ == '__main__':
    main()
