"""Reads of the audit trail: rows a user may see, and the verification of the hash chain (I7)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from audit.chain import GENESIS_HASH, HASHED_FIELDS, row_hash
from audit.models import AuditEvent


def audit_event_list(*, user):
    """The rows the user acted in; staff see every row."""
    events = AuditEvent.objects.select_related("actor")
    return events if user.is_staff else events.filter(actor_id=user.pk)


@dataclass(frozen=True)
class ChainBreak:
    id: int
    reason: str  # content_changed | missing_row | out_of_order
    message: str


@dataclass(frozen=True)
class ChainVerification:
    valid: bool
    checked: int  # rows read, up to and including the first bad one
    first_bad: ChainBreak | None
    # The hash of the last row (None when empty). Deleting the newest rows leaves a valid, shorter chain:
    # only a head recorded elsewhere ("anchored") and compared later shows that.
    last_hash: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def audit_chain_verify(*, batch_size: int = 1000) -> ChainVerification:
    """Walk the chain in id order, `batch_size` rows per query (memory stays bounded whatever the table's size),
    recomputing each row's hash and checking that it links to the row before it. Stops at the first bad row."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    expected_prev, last_id, checked = GENESIS_HASH, 0, 0
    while True:
        rows = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id")
                    .values_list("id", "hash", *HASHED_FIELDS)[:batch_size])
        for row_id, stored_hash, *values in rows:
            checked += 1
            fields = dict(zip(HASHED_FIELDS, values))
            if fields["prev_hash"] != expected_prev:
                return ChainVerification(valid=False, checked=checked, last_hash=None,
                                         first_bad=_link_break(row_id, fields["prev_hash"], expected_prev))
            if row_hash(**fields) != stored_hash:
                return ChainVerification(valid=False, checked=checked, last_hash=None, first_bad=ChainBreak(
                    id=row_id, reason="content_changed",
                    message=f"row #{row_id} does not match its hash: its content was changed"))
            expected_prev = stored_hash
        if len(rows) < batch_size:
            return ChainVerification(valid=True, checked=checked, first_bad=None,
                                     last_hash=None if checked == 0 else expected_prev)
        last_id = rows[-1][0]


def _link_break(row_id: int, prev_hash: str, expected_prev: str) -> ChainBreak:
    """Why a row does not follow the one before it: what its prev_hash points at tells deletion from reordering."""
    if prev_hash == GENESIS_HASH:
        return ChainBreak(id=row_id, reason="out_of_order", message=(
            f"row #{row_id} claims to start the chain but rows come before it: rows were reordered or inserted"))
    if AuditEvent.objects.filter(hash=prev_hash).exists():
        return ChainBreak(id=row_id, reason="out_of_order", message=(
            f"row #{row_id} follows a row other than the one before it: rows were reordered or inserted"))
    before = "the start of the chain" if expected_prev == GENESIS_HASH else "the row before it"
    return ChainBreak(id=row_id, reason="missing_row", message=(
        f"row #{row_id} does not link to {before}: the row it followed was deleted or rewritten"))
