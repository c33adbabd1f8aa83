"""Chatter's benchmarks, one command each: `python -m bench.<name>` from the repository root.

See bench/README.md for the commands and bench/RESULTS.md for the figures.
"""
