"""The audit trail over the API: rows as stored (hashes included, so a client can check links itself), and the
result of a chain verification."""
from __future__ import annotations

from rest_framework import serializers

from audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    actor_username = serializers.CharField(source="actor.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = AuditEvent
        fields = ("id", "created_at", "actor", "actor_username", "actor_type", "action", "target_type", "target_id",
                  "correlation_id", "ip", "data", "prev_hash", "hash")
        read_only_fields = fields


class ChainBreakSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.ChoiceField(choices=("content_changed", "missing_row", "out_of_order"))
    message = serializers.CharField()


class ChainVerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="rows read, up to and including the first bad one")
    first_bad = ChainBreakSerializer(allow_null=True)
    last_hash = serializers.CharField(allow_null=True, help_text=(
        "the chain's head; record it elsewhere to detect a later deletion of the newest rows"))
