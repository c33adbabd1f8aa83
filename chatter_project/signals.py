"""Signals of the project's plumbing, answered by the apps above it (the plumbing imports none of them)."""
from django.dispatch import Signal

# A request or websocket was refused (401/403, 4401/4404). sender=None; kwargs: user (may be anonymous), ip,
# method, path, status. Receivers must not raise: the refusal is answered whatever they do.
access_denied = Signal()

# An API key was made or revoked over the API. sender=ApiToken; kwargs: action ("api_key.created" |
# "api_key.revoked"), token, actor, ip. Sent inside the service's transaction: receivers write in it.
api_key_changed = Signal()
