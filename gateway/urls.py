from django.urls import path, re_path

from gateway.views import (
    ChatCompletionsView,
    CompletionsView,
    EmbeddingsView,
    ModelsView,
    ModelView,
    ResponsesView,
    unknown_url,
)

urlpatterns = [
    path("chat/completions", ChatCompletionsView.as_view(), name="gateway-chat-completions"),
    path("completions", CompletionsView.as_view(), name="gateway-completions"),
    path("responses", ResponsesView.as_view(), name="gateway-responses"),
    path("embeddings", EmbeddingsView.as_view(), name="gateway-embeddings"),
    path("models", ModelsView.as_view(), name="gateway-models"),
    path("models/<path:model>", ModelView.as_view(), name="gateway-model"),
    re_path(r"^(?P<path>.*)$", unknown_url, name="gateway-unknown-url"),  # last: what nothing above serves
]
