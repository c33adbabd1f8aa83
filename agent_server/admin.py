from django.contrib import admin

from agent_server.models import AgentRun, Assistant, AssistantVersion, StoreItem


@admin.register(AgentRun)
class AgentRunAdmin(admin.ModelAdmin):
    """What /langgraph/ adds to a run (the run itself is under Workflow executions): read-only."""

    list_display = ("execution", "assistant_id", "multitask_strategy", "queued", "rolled_back", "created_at")
    list_filter = ("assistant_id", "multitask_strategy", "queued", "rolled_back")
    search_fields = ("execution__id", "assistant_id")
    readonly_fields = ("execution", "assistant_id", "metadata", "stream_mode", "multitask_strategy", "queued",
                       "rolled_back", "created_at")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StoreItem)
class StoreItemAdmin(admin.ModelAdmin):
    list_display = ("owner", "namespace", "key", "updated_at")
    list_filter = ("owner",)
    search_fields = ("namespace", "key")
    readonly_fields = ("created_at", "updated_at")


class AssistantVersionInline(admin.TabularInline):
    model = AssistantVersion
    fields = ("version", "graph_id", "name", "config", "context", "metadata", "created_at")
    readonly_fields = fields
    ordering = ("-version",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    """Users' own /langgraph/ assistants and their versions: read-only here (changed through the API, audited)."""

    list_display = ("id", "name", "graph_id", "version", "owner", "created_at", "updated_at")
    list_filter = ("current__graph_id", "created_at")
    list_select_related = ("current", "owner")
    search_fields = ("id", "current__name", "current__graph_id", "owner__username")
    readonly_fields = ("id", "owner", "current", "created_at", "updated_at")
    inlines = [AssistantVersionInline]

    @admin.display(ordering="current__name")
    def name(self, obj):
        return obj.current.name if obj.current_id else ""

    @admin.display(ordering="current__graph_id")
    def graph_id(self, obj):
        return obj.current.graph_id if obj.current_id else ""

    @admin.display(ordering="current__version")
    def version(self, obj):
        return obj.current.version if obj.current_id else None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # deleted through the API, where the deletion is audited


@admin.register(AssistantVersion)
class AssistantVersionAdmin(admin.ModelAdmin):
    list_display = ("assistant", "version", "graph_id", "name", "created_at")
    list_filter = ("graph_id",)
    search_fields = ("assistant__id", "name", "graph_id")
    readonly_fields = ("assistant", "version", "graph_id", "name", "description", "config", "context", "metadata",
                       "created_at")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
