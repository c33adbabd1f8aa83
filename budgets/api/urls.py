from rest_framework.routers import SimpleRouter

from budgets.api.views import BudgetViewSet

router = SimpleRouter()
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = router.urls
