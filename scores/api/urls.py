from rest_framework.routers import SimpleRouter

from scores.api.views import ScoreViewSet

router = SimpleRouter()
router.register("scores", ScoreViewSet, basename="score")

urlpatterns = router.urls
