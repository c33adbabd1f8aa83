from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chatter_project.api.views import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(url="/live/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("chatter_project.api.urls")),
    path("langgraph/", include("agent_server.urls")),
    path("v1/", include("gateway.urls")),  # the OpenAI-compatible gateway
    path("metrics", metrics_view, name="metrics"),
    path("", include("chatter_project.live_urls")),
]

handler400 = "chatter_project.error_pages.bad_request"
handler404 = "chatter_project.error_pages.page_not_found"
handler500 = "chatter_project.error_pages.server_error"
