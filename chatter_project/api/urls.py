"""/api/v1/: each app's `api/urls.py`, plus API tokens and the OpenAPI schema and its UI."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from chatter_project.api.budgets import BudgetViewSet
from chatter_project.api.keys import ApiKeyViewSet
from chatter_project.api.views import AuthTokenView, HealthView

keys = SimpleRouter()
keys.register("keys", ApiKeyViewSet, basename="api-key")
keys.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = [
    path("auth/token/", AuthTokenView.as_view(), name="api-auth-token"),
    *keys.urls,
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
