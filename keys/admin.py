from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from rest_framework.authtoken.models import TokenProxy

from core.admin_services import DeletesThroughService
from keys.models import ApiToken
from keys.services import api_key_revoke

admin.site.site_header = "Chatter"
admin.site.site_title = "Chatter"
admin.site.index_title = "Chatter administration"

# DRF's own token table is no longer read (its keys were moved, hashed, by migration chatter_project 0002): its
# admin, which would show and make plain-text keys that authenticate no one, goes.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(DeletesThroughService):
    """Tokens by their prefix: the key itself is shown once, to whoever made it (the API or
    `manage.py create_api_token`), and never stored. Deleting a token revokes it, as the API does
    (keys.services.api_key_revoke: audited, its sockets closed): the row stays, so the runs and the usage rollups
    that name it keep their key."""

    list_display = ("prefix", "name", "user", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at")
    list_filter = ("revoked_at", "expires_at", "created_at")
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__username")
    fields = readonly_fields = ("uid", "prefix", "name", "user", "scopes", "expires_at", "revoked_at",
                                "last_used_at", "created_at")
    actions = ["revoke_keys"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # revoke_keys in its place: a key is never deleted here
        return actions

    def delete_model(self, request, obj) -> None:
        api_key_revoke(token=obj, actor=request.user, ip=request.META.get("REMOTE_ADDR"))


    def response_delete(self, request, obj_display, obj_id):
        self.message_user(request, f"The API key “{obj_display}” was revoked.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:keys_apitoken_changelist"))

    @admin.action(description="Revoke selected API keys", permissions=["delete"])
    def revoke_keys(self, request, queryset) -> None:
        live = list(queryset.filter(revoked_at__isnull=True))
        self.delete_queryset(request, live)
        self.message_user(request, f"{len(live)} API key(s) revoked; {queryset.count() - len(live)} already "
                                   "revoked, skipped.", messages.SUCCESS)
