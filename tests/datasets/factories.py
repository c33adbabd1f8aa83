import factory

from datasets.models import Dataset, DatasetItem


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    owner = None  # give one: DatasetFactory(owner=alice)
    name = factory.Sequence(lambda n: f"dataset-{n}")


class DatasetItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DatasetItem

    dataset = factory.SubFactory(DatasetFactory)
    input = factory.Sequence(lambda n: {"message": f"question {n}"})
    expected_output = factory.Sequence(lambda n: f"answer {n}")
