from django.urls import path
from rest_framework.routers import SimpleRouter

from workflows.api.chat import ChatView
from workflows.api.views import (
    ConversationCheckpointsView,
    DefinitionViewSet,
    ExecutionViewSet,
    ScheduleViewSet,
    TemplateViewSet,
)

router = SimpleRouter()
router.register("executions", ExecutionViewSet, basename="execution")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("workflows/templates", TemplateViewSet, basename="template")
router.register("workflows/definitions", DefinitionViewSet, basename="definition")

urlpatterns = [
    path("chat/", ChatView.as_view(), name="chat"),
    path("conversations/<str:pk>/checkpoints/", ConversationCheckpointsView.as_view(),
         name="conversation-checkpoints"),
    *router.urls,
]
