from django.urls import path
from rest_framework.routers import SimpleRouter

from tools.api.views import McpServerViewSet, ToolListView

router = SimpleRouter()
router.register("tools/servers", McpServerViewSet, basename="mcp-server")

urlpatterns = [path("tools/", ToolListView.as_view(), name="tool-list"), *router.urls]
