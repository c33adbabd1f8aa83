from rest_framework.routers import SimpleRouter

from experiments.api.views import ExperimentViewSet

router = SimpleRouter()
router.register("experiments", ExperimentViewSet, basename="experiment")

urlpatterns = router.urls
