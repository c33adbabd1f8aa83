"""The suite's own flush (tests/quick_flush) leaves the database as Django's flush does."""
import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.commands import flush as django_flush
from django.db import connection

from tests.factories import (
    ApiTokenFactory,
    BudgetFactory,
    MessageFactory,
    WorkflowExecutionFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def rows_written():
    """Rows across many tables, with foreign keys between them, and a row in the seeded tables."""
    message = MessageFactory()
    user = message.conversation.owner
    WorkflowExecutionFactory(owner=user)
    ApiTokenFactory(user=user)
    BudgetFactory(owner=user)
    group = Group.objects.create(name="editors")
    group.permissions.add(Permission.objects.first())
    user.groups.add(group)


def table_rows() -> dict[str, int]:
    with connection.cursor() as cursor:
        counts = {}
        for name in connection.introspection.django_table_names(only_existing=True, include_views=False):
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(name)}")
            counts[name] = cursor.fetchone()[0]
    return counts


def flush(command):
    call_command(command, verbosity=0, interactive=False, reset_sequences=False, allow_cascade=False,
                 inhibit_post_migrate=False)


def test_the_suites_flush_leaves_every_table_as_djangos_does_and_keeps_content_type_ids():
    rows_written()
    before = table_rows()
    assert sum(1 for count in before.values() if count) > 10
    type_ids = dict(ContentType.objects.values_list("model", "id"))

    flush(django_flush.Command())
    by_django = table_rows()
    rows_written()
    flush("flush")  # the suite's, as TransactionTestCase calls it
    by_suite = table_rows()

    assert by_suite == by_django
    assert by_suite["django_content_type"] == len(type_ids)
    assert by_suite["workflows_workflowexecution"] == 0 and by_suite["auth_group_permissions"] == 0
    assert any(by_suite.values())  # what post_migrate seeds is there again
    assert dict(ContentType.objects.values_list("model", "id")) != type_ids  # Django's made them anew...
    kept = dict(ContentType.objects.values_list("model", "id"))
    rows_written()
    flush("flush")
    assert dict(ContentType.objects.values_list("model", "id")) == kept  # ...the suite's keeps them


def test_item_24_a_test_that_changed_content_types_or_permissions_gets_djangos_flush():
    """The suite's flush keeps content types and permissions only while they are what Django's flush made: a test
    that deleted or renamed some (a migration test does) gets them made again from the models."""
    flush("flush")
    made = table_rows()
    Permission.objects.filter(codename="view_group").update(name="Renamed")
    Permission.objects.filter(codename="add_group").delete()
    ContentType.objects.filter(app_label="sessions").delete()
    rows_written()
    flush("flush")
    assert table_rows() == made
    assert Permission.objects.get(codename="view_group").name == "Can view group"
    assert Permission.objects.filter(codename="add_group").exists()
    assert ContentType.objects.filter(app_label="sessions", model="session").exists()
