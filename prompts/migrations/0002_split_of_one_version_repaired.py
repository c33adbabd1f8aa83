"""A label whose split names one version (kept so before the API checked splits: {"1": 5, "01": 0} was merged into
{"1": 0}) points at that version, as every draw of it gives; a split whose versions all weigh 0 is left as it is
(which version was meant is not ours to guess: resolving it is a 409 naming the label)."""
from django.db import migrations


def split_of_one_version_repaired(apps, schema_editor):
    PromptLabel = apps.get_model("prompts", "PromptLabel")
    PromptVersion = apps.get_model("prompts", "PromptVersion")
    for label in PromptLabel.objects.exclude(split={}).iterator():
        if not isinstance(label.split, dict) or len(label.split) != 1:
            continue
        (key,) = label.split
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            continue
        version = PromptVersion.objects.filter(prompt_id=label.prompt_id, version=int(key)).first()
        if version is not None:
            PromptLabel.objects.filter(pk=label.pk).update(version=version, split={})


class Migration(migrations.Migration):

    dependencies = [("prompts", "0001_initial")]

    operations = [migrations.RunPython(split_of_one_version_repaired, migrations.RunPython.noop)]
