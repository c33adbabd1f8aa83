from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

from keys.models import ApiToken

admin.site.site_header = "Chatter"
admin.site.site_title = "Chatter"
admin.site.index_title = "Chatter administration"

# DRF's own token table is no longer read (its keys were moved, hashed, by migration chatter_project 0002): its
# admin, which would show and make plain-text keys that authenticate no one, goes.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens by their prefix: the key itself is shown once, to whoever made it (the API or
    `manage.py create_api_token`), and never stored. Deleting a token revokes it."""

    list_display = ("prefix", "name", "user", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at")
    list_filter = ("revoked_at", "expires_at", "created_at")
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__username")
    fields = readonly_fields = ("uid", "prefix", "name", "user", "scopes", "expires_at", "revoked_at",
                                "last_used_at", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
