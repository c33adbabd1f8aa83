"""URLs of the live page; included at the root by the project's URLconf."""
from django.urls import path

from workflows.live import LiveLoginView, LiveLogoutView, live_page

urlpatterns = [
    path("live/", live_page, name="live"),
    path("live/login/", LiveLoginView.as_view(), name="live-login"),
    path("live/logout/", LiveLogoutView.as_view(), name="live-logout"),
]
