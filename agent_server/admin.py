from django.contrib import admin

from agent_server.models import AgentRun, StoreItem


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
