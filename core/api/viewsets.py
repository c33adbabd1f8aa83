"""The base of every owner-scoped viewset."""
from __future__ import annotations

import uuid

from rest_framework import viewsets

from core.errors import NotFound


def url_uuid(value, *, not_found: str) -> uuid.UUID:
    """An id of a request's URL as the UUID it names; a malformed one is a 404 (NotFound(not_found)), as a missing
    one is: how every view reads an id of its URL before it looks it up (a lookup given an id its field refuses
    would raise instead)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(not_found) from None


class OwnedViewSet(viewsets.GenericViewSet):
    """Objects are looked up in get_queryset(), which subclasses restrict to what the user may see, so another
    user's object is a 404, never a 403 that confirms it exists (docs/api/rest.md). Ids that are not UUIDs are 404s."""

    not_found = "not found"
    id_field = "pk"  # the model field the URL's id names (a public uid, for a model whose pk is not one)

    def get_object(self):
        pk = url_uuid(self.kwargs[self.lookup_url_kwarg or self.lookup_field], not_found=self.not_found)
        obj = self.get_queryset().filter(**{self.id_field: pk}).first()
        if obj is None:
            raise NotFound(self.not_found)
        return obj
