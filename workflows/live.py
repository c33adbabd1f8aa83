"""The live page (docs/usage.md#the-live-page): a logged-in user's recent runs, a chat form, and one run watched as it
happens.

The views only render templates; the page reads and writes through the REST API and the websocket.
"""
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.decorators.csrf import ensure_csrf_cookie

from engine.providers import providers_configured

LOGIN_URL = reverse_lazy("live-login")


@login_required(login_url=LOGIN_URL)
@ensure_csrf_cookie  # the page's script sends the cookie back as X-CSRFToken on API writes
def live_page(request):
    # Only providers this installation can call are offered (no key or URL: not on the menu).
    return render(request, "live/live.html", {"providers": providers_configured(),
                                              "default_provider": settings.CHATTER_DEFAULT_PROVIDER})


class LiveLoginView(auth_views.LoginView):
    template_name = "live/login.html"
    redirect_authenticated_user = True
    next_page = reverse_lazy("live")


class LiveLogoutView(auth_views.LogoutView):
    next_page = LOGIN_URL
