from django.urls import path
from rest_framework.routers import SimpleRouter

from analytics.api.views import PriceViewSet, PromptAnalyticsView, TemplateAnalyticsView, ToolUsageView, UsageView

router = SimpleRouter()
router.register("pricing", PriceViewSet, basename="price")

urlpatterns = [
    path("analytics/usage/", UsageView.as_view(), name="analytics-usage"),
    path("analytics/templates/", TemplateAnalyticsView.as_view(), name="analytics-templates"),
    path("analytics/tools/", ToolUsageView.as_view(), name="analytics-tools"),
    path("analytics/prompts/<str:name>/", PromptAnalyticsView.as_view(), name="analytics-prompt"),
    *router.urls,
]
