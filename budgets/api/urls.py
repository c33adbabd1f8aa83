"""The budgets app's routes under /api/v1/: budgets/."""
from rest_framework.routers import SimpleRouter

from budgets.api.views import BudgetViewSet

router = SimpleRouter()
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = router.urls
