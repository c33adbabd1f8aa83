"""Chatter's settings for a test server that logs each statement it runs: Django's `django.db.backends` logger logs
them (with DEBUG on) at DEBUG level, which Chatter's logging leaves out. Start it with DEBUG=1."""
from chatter_project.settings import *  # noqa: F403
from chatter_project.settings import LOGGING

LOGGING["loggers"]["django.db.backends"] = {"level": "DEBUG"}
