"""The keys app's domain signal, answered by apps above it (audit rows, closing a revoked key's sockets)."""
from django.dispatch import Signal

# An API key was made or revoked over the API. sender=ApiToken; kwargs: action ("api_key.created" |
# "api_key.revoked"), token, actor, ip. Sent inside the service's transaction: receivers write in it.
api_key_changed = Signal()
