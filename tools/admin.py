"""MCP servers in the admin: listed with their tools and health, never a header's value (their names are shown).
Staff add and change one through the services the API uses (tools.services): the same validation (the API's
serializer), the same outbound policy on its URL (a refusal is shown on the form), headers write-only, discovery on
save with its result shown, each write audited. stdio servers are the operator's file's only, never added here."""
import json

from django import forms
from django.contrib import admin, messages

from core.admin_services import DeletesThroughService
from core.errors import InvalidInput, error_details
from tools.api.serializers import API_TRANSPORTS, McpServerUpdateSerializer
from tools.models import McpServer
from tools.selectors import mcp_server_name_taken
from tools.services import mcp_server_create, mcp_server_delete, mcp_server_update, mcp_url_check

# What the form gives the services, besides the headers (given only when typed in, or cleared).
FORM_VALUES = ("name", "url", "transport", "per_user_headers", "shared", "enabled")
SHOWN = ("id", "owner", "command", "header_names", "user_credentials", "declared", "health", "last_error",
         "checked_at", "tools", "tools_refreshed_at", "created_at", "updated_at")


class McpServerAdminForm(forms.ModelForm):
    """A server's fields as the API takes them (validated by its serializer); `headers` a password-style input
    that is never rendered back (left empty on change, the stored headers are kept)."""

    # Set per request by McpServerAdmin.get_form: whose server it is (or will be), and the server changed (None
    # when one is added).
    owner = None
    server: McpServer | None = None

    transport = forms.ChoiceField(choices=API_TRANSPORTS, initial=McpServer.Transport.STREAMABLE_HTTP)
    headers = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False),
        help_text='a JSON object, e.g. {"Authorization": "Bearer …"}: sent with every request to the server; '
                  "write-only (encrypted at rest, never shown again). Left empty on change, the stored headers "
                  "are kept.")
    clear_headers = forms.BooleanField(required=False, help_text="forget the stored headers")
    per_user_headers = forms.CharField(
        required=False, help_text="comma-separated names of headers each user sets for themselves (their own "
                                  "token for a shared server)")

    class Meta:
        model = McpServer
        fields = ("name", "url", "transport", "per_user_headers", "shared", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["per_user_headers"] = ", ".join(self.instance.per_user_headers)

    def clean_headers(self) -> dict | None:
        typed = self.cleaned_data["headers"]
        if not typed:
            return None
        try:
            headers = json.loads(typed)
        except ValueError:
            raise forms.ValidationError('not JSON: give an object such as {"Authorization": "Bearer …"}') from None
        if not isinstance(headers, dict):
            raise forms.ValidationError('give an object such as {"Authorization": "Bearer …"}')
        return headers

    def clean_per_user_headers(self) -> list:
        return [name.strip() for name in self.cleaned_data["per_user_headers"].split(",") if name.strip()]

    def clean(self) -> dict:
        """The values checked as the API checks them, its URL against the outbound policy, its name free."""
        cleaned = super().clean()
        given = {field: cleaned[field] for field in (*FORM_VALUES, "headers")
                 if field in cleaned and cleaned[field] is not None}
        serializer = McpServerUpdateSerializer(data=given)
        if not serializer.is_valid():
            for item in error_details(serializer.errors, code="invalid"):
                field = item["path"].split(".")[0].split("[")[0]
                self.add_error(field if field in self.fields else None, item["message"])
            return cleaned
        cleaned.update(serializer.validated_data)
        if "url" in given and (self.server is None or cleaned["url"] != self.server.url):  # (checked when set)
            try:
                mcp_url_check(url=cleaned["url"])
            except InvalidInput as refused:
                self.add_error("url", refused.message)
        if "name" in given:
            taken = mcp_server_name_taken(owner=self.owner, name=cleaned["name"], shared=cleaned.get("shared", False),
                                          server=self.server)
            if taken:
                self.add_error("name", taken)
        return cleaned

    def service_values(self) -> dict:
        """What mcp_server_create / mcp_server_update are given: on a change, the fields changed; `headers` only
        when typed in or cleared."""
        changed = [field for field in FORM_VALUES if self.server is None or field in self.changed_data]
        values = {field: self.cleaned_data[field] for field in changed}
        if self.cleaned_data.get("headers"):
            values["headers"] = self.cleaned_data["headers"]
        elif self.cleaned_data.get("clear_headers"):
            values["headers"] = {}
        return values


@admin.register(McpServer)
class McpServerAdmin(DeletesThroughService):
    form = McpServerAdminForm
    list_display = ("name", "owner", "url", "transport", "shared", "declared", "enabled", "health",
                    "tools_refreshed_at")
    list_filter = ("transport", "shared", "declared", "enabled", "health")
    search_fields = ("name", "url", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = SHOWN

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "url", "transport", "headers", "per_user_headers", "shared", "enabled")
        inputs = ("headers", "clear_headers") if self.has_change_permission(request, obj) else ()
        return ("id", "name", "owner", "url", "transport", "command", *inputs, "header_names", "per_user_headers",
                "user_credentials", "shared", "declared", "enabled", "health", "last_error", "checked_at", "tools",
                "tools_refreshed_at", "created_at", "updated_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.owner, form.server = (obj.owner if obj is not None else request.user), obj  # a class of this request's
        return form

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
        """Through the services (audited; its tools asked for when it is new or where or how it is reached
        changed); what the server answered is shown."""
        ip = request.META.get("REMOTE_ADDR")
        if change:
            server = mcp_server_update(server=McpServer.objects.get(pk=obj.pk), actor=request.user,
                                       changes=form.service_values(), ip=ip)
        else:
            server = mcp_server_create(owner=request.user, ip=ip, **form.service_values())
        obj.pk = server.pk
        obj.refresh_from_db()
        self.message_user(request, *_health_said(server))

    def delete_model(self, request, obj) -> None:
        mcp_server_delete(server=obj, actor=request.user, ip=request.META.get("REMOTE_ADDR"))


def _health_said(server: McpServer) -> tuple[str, int]:
    """What asking the server for its tools found, as a message and its level."""
    if server.health == McpServer.Health.UNHEALTHY:
        return f"The MCP server {server.name!r} could not be asked for its tools: {server.last_error}", messages.WARNING
    if server.health == McpServer.Health.HEALTHY:
        names = ", ".join(tool["name"] for tool in server.tools) or "none"
        left_out = f" It {server.last_error}." if server.last_error else ""  # (tools no model can be offered)
        return f"The MCP server {server.name!r} is healthy; its tools: {names}.{left_out}", messages.SUCCESS
    return (f"The MCP server {server.name!r} has not been asked for its tools yet (it asks each user for their own "
            f"headers: {', '.join(server.per_user_headers)}; a refresh by one who has set theirs asks).",
            messages.INFO)
