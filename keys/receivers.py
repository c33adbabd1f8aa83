"""A key's row or its user's changed (made, revoked, deleted, deactivated): the processes' memo of hot reads
(core.cache.hot_reads, where a request's key is looked up) reads afresh at the next request."""
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from core.cache import hot_reads
from keys.models import ApiToken
from keys.signals import api_key_changed

for model in (ApiToken, get_user_model()):
    post_save.connect(hot_reads.changed, sender=model, dispatch_uid=f"hot_reads_{model.__name__}_saved")
    post_delete.connect(hot_reads.changed, sender=model, dispatch_uid=f"hot_reads_{model.__name__}_deleted")
# A revocation is an UPDATE of its own (no post_save): it sends the keys app's signal.
api_key_changed.connect(hot_reads.changed, sender=ApiToken, dispatch_uid="hot_reads_api_key_changed")
