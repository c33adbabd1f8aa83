"""Collections and their documents in the admin: status and chunk counts, and on a collection's page a search box
that shows what retrieval would return, with scores (hit testing). The search is the staff member's own: its query
embedding is their LLM call, as every search's is the searcher's."""
from django.contrib import admin

from core.errors import ChatterError
from knowledge.models import Collection, CollectionDocument
from knowledge.search import MODES, collection_search


class DocumentInline(admin.TabularInline):
    model = CollectionDocument
    fields = ("title", "status", "error", "chunk_count", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "shared", "embedding_model", "dimensions", "chunk_size", "chunk_overlap",
                    "created_at")
    list_filter = ("shared", "embedding_model")
    search_fields = ("name", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = ("id", "owner", "embedding_model", "dimensions", "chunk_size", "chunk_overlap",
                       "pending_embedding_model", "reembed_error", "created_at", "updated_at")
    fields = ("id", "name", "description", "owner", "shared", *readonly_fields[2:])
    inlines = [DocumentInline]
    change_form_template = "admin/knowledge/collection/change_form.html"

    def has_add_permission(self, request) -> bool:
        return False  # made through the API, where the model is resolved and the vectors' size known

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The page, with the hits of `?q=` (and `?mode=`) when asked."""
        query, mode = request.GET.get("q", "").strip(), request.GET.get("mode", "hybrid")
        context = {"hit_query": query, "hit_mode": mode, "hit_modes": MODES, **(extra_context or {})}
        collection = self.get_object(request, object_id)
        if query and collection is not None:
            try:
                context["hits"] = collection_search(collection=collection, user=request.user, query=query[:2000],
                                                    k=10, mode=mode if mode in MODES else "hybrid")
            except ChatterError as failure:
                context["hit_error"] = failure.message
        return super().change_view(request, object_id, form_url, extra_context=context)


@admin.register(CollectionDocument)
class CollectionDocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "collection", "status", "chunk_count", "created_at")
    list_filter = ("status",)
    search_fields = ("title", "collection__name")
    list_select_related = ("collection",)
    fields = ("id", "collection", "title", "status", "error", "chunk_count", "file_name", "content_type",
              "content_hash", "metadata", "source_document", "created_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False
