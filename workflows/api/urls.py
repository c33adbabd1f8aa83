from rest_framework.routers import SimpleRouter

from workflows.api.views import ExecutionViewSet

router = SimpleRouter()
router.register("executions", ExecutionViewSet, basename="execution")

urlpatterns = router.urls
