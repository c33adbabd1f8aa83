from django.urls import path
from rest_framework.routers import SimpleRouter

from keys.api.views import ApiKeyViewSet, AuthTokenView

router = SimpleRouter()
router.register("keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [path("auth/token/", AuthTokenView.as_view(), name="api-auth-token"), *router.urls]
