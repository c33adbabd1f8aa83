from rest_framework.routers import SimpleRouter

from workflows.api.views import (
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

urlpatterns = router.urls
