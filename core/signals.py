"""Signals of the project's plumbing, answered by the apps above it (the plumbing imports none of them)."""
from django.dispatch import Signal

# A request or websocket was refused (401/403, 4401/4404). sender=None; kwargs: user (may be anonymous), ip,
# method, path, status. Receivers must not raise: the refusal is answered whatever they do.
access_denied = Signal()
