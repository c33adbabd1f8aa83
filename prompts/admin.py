"""Prompts in the admin: read-only pages (versions are immutable; labels move through prompts.services, which
audits each move: the API's PUT …/labels/<label>/ or `manage.py prompt label`)."""
from django.contrib import admin, messages
from django.db.models import Count

from prompts.models import LATEST, Prompt, PromptAssignment, PromptLabel, PromptVersion
from prompts.services import prompt_label_set


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
    """Staff protect a label here (then only staff move it), through the service that audits every change."""

    list_display = ("prompt", "name", "target", "protected", "updated_by", "updated_at")
    list_filter = ("protected", "name")
    search_fields = ("prompt__name", "name")
    list_select_related = ("prompt", "version", "updated_by")
    actions = ("protect", "unprotect")

    def _protection(self, request, queryset, protected: bool) -> None:
        changed = 0
        for label in queryset.select_related("prompt", "version").exclude(name=LATEST):
            target = {"split": label.split} if label.split else {"version": label.version.version}
            prompt_label_set(prompt=label.prompt, name=label.name, protected=protected, actor=request.user,
                             ip=request.META.get("REMOTE_ADDR"), **target)
            changed += 1
        self.message_user(request, f"{changed} label(s) {'protected' if protected else 'unprotected'} "
                                   f"(`latest` moves by itself and is never protected)", messages.SUCCESS)

    @admin.action(description="Protect selected labels (only staff may then move them)")
    def protect(self, request, queryset):
        self._protection(request, queryset, True)

    @admin.action(description="Unprotect selected labels")
    def unprotect(self, request, queryset):
        self._protection(request, queryset, False)


@admin.register(PromptAssignment)
class PromptAssignmentAdmin(ReadOnlyAdmin):
    list_display = ("label", "conversation", "version", "created_at")
    list_select_related = ("label", "version")
    search_fields = ("label__prompt__name", "label__name")
