"""Prompts in the admin: read-only pages (versions are immutable; labels move through prompts.services, which
audits each move: the API's PUT …/labels/<label>/ or `manage.py prompt label`)."""
from django.contrib import admin
from django.db.models import Count

from prompts.models import Prompt, PromptAssignment, PromptLabel, PromptVersion


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PromptLabelInline(ReadOnlyInline):
    model = PromptLabel
    fields = ("name", "target", "protected", "updated_by", "updated_at")
    readonly_fields = fields


class PromptVersionInline(ReadOnlyInline):
    model = PromptVersion
    fields = ("version", "type", "config", "commit_message", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-version",)


@admin.register(Prompt)
class PromptAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "version_count", "created_at", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("name", "description", "owner__username")
    list_select_related = ("owner",)
    inlines = (PromptLabelInline, PromptVersionInline)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(ordering="version_count", description="versions")
    def version_count(self, prompt: Prompt) -> int:
        return prompt.version_count


@admin.register(PromptVersion)
class PromptVersionAdmin(ReadOnlyAdmin):
    list_display = ("prompt", "version", "type", "commit_message", "created_by", "created_at")
    list_filter = ("type", "created_at")
    search_fields = ("prompt__name", "commit_message")
    list_select_related = ("prompt", "created_by")


@admin.register(PromptLabel)
class PromptLabelAdmin(ReadOnlyAdmin):
    list_display = ("prompt", "name", "target", "protected", "updated_by", "updated_at")
    list_filter = ("protected", "name")
    search_fields = ("prompt__name", "name")
    list_select_related = ("prompt", "version", "updated_by")


@admin.register(PromptAssignment)
class PromptAssignmentAdmin(ReadOnlyAdmin):
    list_display = ("label", "conversation", "version", "created_at")
    list_select_related = ("label", "version")
    search_fields = ("label__prompt__name", "label__name")
