"""Chatter's settings with B2's floor view added to its URLs (bench/b2_floor.py)."""
from chatter_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.b2_floor"
