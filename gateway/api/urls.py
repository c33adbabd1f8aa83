from django.urls import path

from gateway.api.views import KeyLimitsView

urlpatterns = [path("keys/<uuid:uid>/limits/", KeyLimitsView.as_view(), name="api-key-limits")]
