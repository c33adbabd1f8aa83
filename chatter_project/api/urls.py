"""/api/v1/: each app's `api/urls.py`, plus health and the OpenAPI schema and its UI."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rest_framework.routers import SimpleRouter

from chatter_project.api.budgets import BudgetViewSet
from chatter_project.api.views import HealthView

# Budgets span two apps: a budget (budgets) may be on a template (workflows, above budgets)
budgets = SimpleRouter()
budgets.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = [
    path("", include("keys.api.urls")),
    path("", include("gateway.api.urls")),
    *budgets.urls,
    path("health/", HealthView.as_view(), name="api-health"),
    path("", include("prompts.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("conversations.api.urls")),
    path("", include("scores.api.urls")),
    path("", include("datasets.api.urls")),
    path("", include("experiments.api.urls")),
    path("", include("analytics.api.urls")),
    path("", include("audit.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
