"""URLs of the live page; included at the root by chatter_project/urls.py."""
from django.urls import path

from chatter_project.live import LiveLoginView, LiveLogoutView, live_page

urlpatterns = [
    path("live/", live_page, name="live"),
    path("live/login/", LiveLoginView.as_view(), name="live-login"),
    path("live/logout/", LiveLogoutView.as_view(), name="live-logout"),
]
