from django.urls import path
from rest_framework.routers import SimpleRouter

from audit.api.views import AuditEventViewSet, AuditVerifyView

router = SimpleRouter()
router.register("audit/events", AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("audit/verify/", AuditVerifyView.as_view(), name="audit-verify"),
    *router.urls,
]
