"""MCP servers in the admin: what they are, their tools and health; header values are never shown (their names
are). Registered through the API (where the URL is checked and the tools discovered); here staff may switch a
server on or off, share it, or delete it, through the same services (audited)."""
from django.contrib import admin

from tools.models import McpServer
from tools.services import mcp_server_delete, mcp_server_update


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "url", "transport", "shared", "declared", "enabled", "health",
                    "tools_refreshed_at")
    list_filter = ("transport", "shared", "declared", "enabled", "health")
    search_fields = ("name", "url", "owner__username")
    list_select_related = ("owner",)
    fields = ("id", "name", "owner", "url", "transport", "command", "header_names", "per_user_headers",
              "user_credentials", "shared", "declared", "enabled", "health", "last_error", "checked_at", "tools",
              "tools_refreshed_at", "created_at", "updated_at")
    readonly_fields = tuple(field for field in fields if field not in ("shared", "enabled"))

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="users' own credentials")
    def user_credentials(self, obj: McpServer) -> str:
        """Who has set their own values of its per_user_headers: the user and the header names, never a value."""
        return ", ".join(f"{credential.user} ({', '.join(credential.header_names)})"
                         for credential in obj.credentials.select_related("user").order_by("user__username")) or "-"

    def has_change_permission(self, request, obj=None) -> bool:  # the operator's file is where a declared one changes
        return super().has_change_permission(request, obj) and not (obj is not None and obj.declared)

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.declared)

    def save_model(self, request, obj, form, change) -> None:
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in ("shared", "enabled")}
        if changes:
            original = McpServer.objects.get(pk=obj.pk)
            mcp_server_update(server=original, actor=request.user, changes=changes,
                              ip=request.META.get("REMOTE_ADDR"))

    def delete_model(self, request, obj) -> None:
        mcp_server_delete(server=obj, actor=request.user, ip=request.META.get("REMOTE_ADDR"))

    def delete_queryset(self, request, queryset) -> None:
        for server in queryset:
            self.delete_model(request, server)
