"""Daphne's app config, in a module of its own (an apps module with two configs would lose the project's)."""
from django.apps import AppConfig


class DaphneConfig(AppConfig):
    """Daphne's app (its `runserver` command) without daphne.apps, which imports daphne's server, and with it Twisted
    and its TLS, in every process that sets Django up: about 0.4 s of CPU at each start of a worker or a command,
    which serve nothing over Twisted. A daphne server (its command line, `runserver`) imports the server, and
    installs Twisted's asyncio reactor, before anything else of Twisted's is loaded: nothing Django loads at setup
    imports Twisted. daphne.apps' system check (this app comes before django.contrib.staticfiles) is registered by
    that module alone; INSTALLED_APPS lists the app first."""

    name = "daphne"
    verbose_name = "Daphne"
