from django.urls import path

from gateway.views import ChatCompletionsView, ModelsView

urlpatterns = [
    path("chat/completions", ChatCompletionsView.as_view(), name="gateway-chat-completions"),
    path("models", ModelsView.as_view(), name="gateway-models"),
]
