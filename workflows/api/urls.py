from rest_framework.routers import SimpleRouter

from workflows.api.views import ExecutionViewSet, ScheduleViewSet

router = SimpleRouter()
router.register("executions", ExecutionViewSet, basename="execution")
router.register("schedules", ScheduleViewSet, basename="schedule")

urlpatterns = router.urls
