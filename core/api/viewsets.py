"""The base of every owner-scoped viewset."""
from __future__ import annotations

import uuid

from rest_framework import viewsets

from core.errors import NotFound


class OwnedViewSet(viewsets.GenericViewSet):
    """Objects are looked up in get_queryset(), which subclasses restrict to what the user may see, so another
    user's object is a 404, never a 403 that confirms it exists (SPEC §7). Ids that are not UUIDs are 404s."""

    not_found = "not found"
    id_field = "pk"  # the model field the URL's id names (a public uid, for a model whose pk is not one)

    def get_object(self):
        try:
            pk = uuid.UUID(str(self.kwargs[self.lookup_url_kwarg or self.lookup_field]))
        except ValueError:
            raise NotFound(self.not_found) from None
        obj = self.get_queryset().filter(**{self.id_field: pk}).first()
        if obj is None:
            raise NotFound(self.not_found)
        return obj
