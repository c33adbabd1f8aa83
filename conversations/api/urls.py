from django.urls import path
from rest_framework.routers import SimpleRouter

from conversations.api.views import ChatView, ConversationViewSet

router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")

urlpatterns = [
    path("chat/", ChatView.as_view(), name="chat"),
    *router.urls,
]
