"""The project's URLconf: each app's URLs under its surface, health and metrics, and the error pages of every
surface."""
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agent_server.http import LANGGRAPH_ERRORS
from chatter_project.health import HealthView
from chatter_project.metrics import metrics_view
from core.api.exceptions import CHATTER_ERRORS
from core.error_pages import ErrorPages
from gateway.views import OPENAI_ERRORS

api_v1 = [
    path("", include("keys.api.urls")),
    path("", include("gateway.api.urls")),
    path("health/", HealthView.as_view(), name="api-health"),
    path("", include("prompts.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("budgets.api.urls")),
    path("", include("conversations.api.urls")),
    path("", include("scores.api.urls")),
    path("", include("datasets.api.urls")),
    path("", include("experiments.api.urls")),
    path("", include("analytics.api.urls")),
    path("", include("audit.api.urls")),
    path("", include("tools.api.urls")),
    path("", include("knowledge.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/live/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("langgraph/", include("agent_server.urls")),
    path("v1/", include("gateway.urls")),  # the OpenAI-compatible gateway
    path("metrics", metrics_view, name="metrics"),
    path("", include("workflows.live_urls")),
]

# What is answered outside a view, in the error shape of the surface asked (Django's own pages elsewhere).
error_pages = ErrorPages({"/api/": CHATTER_ERRORS, "/langgraph/": LANGGRAPH_ERRORS, "/v1/": OPENAI_ERRORS})
handler400 = error_pages.bad_request
handler404 = error_pages.page_not_found
handler500 = error_pages.server_error
