from django.urls import path
from rest_framework.routers import SimpleRouter

from conversations.api.views import (
    ChatView,
    ConversationViewSet,
    DocumentViewSet,
    MessageListView,
)

router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("documents", DocumentViewSet, basename="document")

urlpatterns = [
    path("chat/", ChatView.as_view(), name="chat"),
    path("conversations/<uuid:pk>/messages/", MessageListView.as_view(), name="conversation-messages"),
    *router.urls,
]
