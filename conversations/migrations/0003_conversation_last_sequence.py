from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import Coalesce


def last_sequence_fill(apps, schema_editor):
    Conversation = apps.get_model("conversations", "Conversation")
    Message = apps.get_model("conversations", "Message")
    last = Message.objects.filter(conversation_id=OuterRef("pk")).values("conversation_id").annotate(
        last=Max("sequence")).values("last")
    Conversation.objects.update(last_sequence=Coalesce(Subquery(last), 0))


class Migration(migrations.Migration):
    dependencies = [("conversations", "0002_initial")]

    operations = [
        migrations.AddField(model_name="conversation", name="last_sequence",
                            field=models.PositiveIntegerField(default=0)),
        migrations.RunPython(last_sequence_fill, migrations.RunPython.noop),
    ]
