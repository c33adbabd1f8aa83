from django.urls import path
from rest_framework.routers import SimpleRouter

from conversations.api.views import (
    ConversationViewSet,
    DocumentViewSet,
    MessageListView,
)

router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("documents", DocumentViewSet, basename="document")

urlpatterns = [
    path("conversations/<uuid:pk>/messages/", MessageListView.as_view(), name="conversation-messages"),
    *router.urls,
]
