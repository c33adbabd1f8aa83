"""Prompts made the way users make them (prompts.services), so `latest` and the audit trail are as in life."""
import factory

from prompts.models import Prompt
from prompts.services import prompt_create, prompt_version_create


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    owner = None  # give one: PromptFactory(owner=alice)
    name = factory.Sequence(lambda n: f"prompt-{n}")
    description = ""
    type = "text"
    content = "You are a helpful assistant. Answer about {{topic}}."
    config = factory.LazyFunction(dict)
    labels = factory.LazyFunction(list)

    @classmethod
    def _create(cls, model_class, *, owner, name, description, type, content, config, labels):
        return prompt_create(owner=owner, name=name, description=description, type=type, content=content,
                             config=config, labels=labels)


def versions_add(prompt: Prompt, count: int, *, text: str = "Version {n}.") -> list:
    """`count` more versions of `prompt`, numbered on."""
    return [prompt_version_create(prompt=prompt, type="text", content=text.format(n=n), config={},
                                  actor=prompt.owner) for n in range(count)]
