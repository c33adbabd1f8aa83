from django.contrib import admin, messages

from conversations.models import Conversation, Document, Message
from conversations.selectors import conversation_is_busy
from conversations.services import conversation_delete, document_create, document_delete, message_delete
from core.errors import Conflict

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("sequence", "role", "content", *USAGE_FIELDS, "cost", "model_used", "error_message", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False  # deletes go through MessageAdmin, which keeps the conversation totals exact
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "status", "message_count", *USAGE_FIELDS, "total_cost", "last_message_at",
                    "created_at")
    list_filter = ("status", "created_at", "last_message_at")
    list_select_related = ("owner",)
    search_fields = ("id__exact", "title", "owner__username")
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    # Stored aggregates (I1): only the message services change them.
    readonly_fields = ("message_count", *USAGE_FIELDS, "total_cost", "last_message_at", "last_sequence", "created_at",
                       "updated_at", "runs_queued")
    inlines = [MessageInline]

    def get_readonly_fields(self, request, obj=None):
        # Its messages and runs are the owner's usage: moving the conversation would move that usage.
        return (*self.readonly_fields, "owner") if obj is not None else self.readonly_fields

    def delete_model(self, request, obj):
        conversation_delete(conversation=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        kept = 0
        for conversation in queryset:
            try:
                conversation_delete(conversation=conversation, actor=request.user)
            except Conflict:  # a run in progress would have nowhere to put its reply
                kept += 1
        if kept:
            self.message_user(request, f"{kept} conversation(s) with a run in progress were kept.", messages.WARNING)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and conversation_is_busy(conversation_id=obj.pk):
            return False
        return super().has_delete_permission(request, obj)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    # Fits 1400 px beside the filters: which message, where, tokens and cost; the rest is on its page.
    list_display = ("__str__", "conversation", "role", "model_used", "total_tokens", "cost", "finish_reason",
                    "created_at")
    list_filter = ("role", "provider_used", "model_used", "usage_estimated", "finish_reason", "created_at")
    list_select_related = ("conversation",)
    search_fields = ("content", "error_message", "conversation__title", "conversation__id__exact")
    raw_id_fields = ("conversation", "execution")
    date_hierarchy = "created_at"
    # Usage and placement are written once by message_save; only content and metadata may be edited.
    readonly_fields = ("conversation", "sequence", "role", "execution", *USAGE_FIELDS, "cached_prompt_tokens",
                       "reasoning_tokens", "cost", "provider_used", "model_used", "finish_reason", "response_time_ms",
                       "usage_estimated", "usage_raw", "tool_calls", "created_at")

    def has_add_permission(self, request):
        return False  # a message saved here would bypass message_save and the conversation totals

    def delete_model(self, request, obj):
        message_delete(message_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset):
        for message_id in list(queryset.values_list("pk", flat=True)):
            message_delete(message_id=message_id, actor=request.user)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "created_at")
    list_filter = ("created_at",)
    list_select_related = ("owner",)
    search_fields = ("title", "content", "owner__username")
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = ("created_at",)

    def has_change_permission(self, request, obj=None):
        # As in the API, a document is added and deleted, never changed: its copy in the owner's Documents
        # collection (what retrieval searches, knowledge.defaults) is made from it when it is added, so a change
        # here would leave search serving the old text, under the old owner. Delete it and add it anew.
        return False

    def save_model(self, request, obj, form, change):
        made = document_create(owner=obj.owner, title=obj.title, content=obj.content, metadata=obj.metadata,
                               actor=request.user)  # as the API makes one: the apps above hear of it
        obj.pk, obj.created_at = made.pk, made.created_at

    def delete_model(self, request, obj):
        document_delete(document=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for document in queryset:
            document_delete(document=document, actor=request.user)
