from django.urls import path, re_path

from gateway.views import ChatCompletionsView, ModelsView, ModelView, unknown_url

urlpatterns = [
    path("chat/completions", ChatCompletionsView.as_view(), name="gateway-chat-completions"),
    path("models", ModelsView.as_view(), name="gateway-models"),
    path("models/<path:model>", ModelView.as_view(), name="gateway-model"),
    re_path(r"^(?P<path>.*)$", unknown_url, name="gateway-unknown-url"),  # last: what nothing above serves
]
