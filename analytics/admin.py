from django.contrib import admin

from analytics.models import ModelPrice, TemplateAnalytics


@admin.register(TemplateAnalytics)
class TemplateAnalyticsAdmin(admin.ModelAdmin):
    list_display = ("template", "total_executions", "successful_executions", "failed_executions",
                    "cancelled_executions", "average_execution_time_ms", "prompt_tokens", "completion_tokens",
                    "total_tokens", "total_cost", "last_used_at")
    list_filter = ("last_used_at", "last_success_at", "last_failure_at")
    list_select_related = ("template",)
    search_fields = ("template__key", "template__name")
    # Counters (I2) are kept by the execution_finished receiver and its recompute command, never by hand.
    readonly_fields = ("template", "total_executions", "successful_executions", "failed_executions",
                       "cancelled_executions", "total_execution_time_ms", "average_execution_time_ms",
                       "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "last_used_at",
                       "last_success_at", "last_failure_at")

    def has_add_permission(self, request):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("provider", "model_pattern", "input_per_million", "cached_input_per_million",
                    "output_per_million", "effective_from", "is_active", "created_at")
    list_filter = ("provider", "is_active", "effective_from")
    search_fields = ("provider", "model_pattern")
    date_hierarchy = "effective_from"
