from django.urls import path
from rest_framework.routers import SimpleRouter

from analytics.api.views import PriceViewSet, TemplateAnalyticsView, UsageView

router = SimpleRouter()
router.register("pricing", PriceViewSet, basename="price")

urlpatterns = [
    path("analytics/usage/", UsageView.as_view(), name="analytics-usage"),
    path("analytics/templates/", TemplateAnalyticsView.as_view(), name="analytics-templates"),
    *router.urls,
]
