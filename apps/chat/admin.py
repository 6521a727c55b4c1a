from django.contrib import admin

from apps.chat.models import ChatMessage, ChatSession
from apps.chat.services import session_changed


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    extra = 0
    fields = ("public_id", "role", "content", "job", "created_at")
    readonly_fields = fields


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("public_id", "title", "owner", "agent", "created_at")
    search_fields = ("public_id", "title", "owner__username")
    readonly_fields = ("public_id", "created_at", "updated_at")
    inlines = [ChatMessageInline]

    # the admin writes around apps.chat.services: it drops cached summaries itself
    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        session_changed(session_id=obj.public_id)

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        session_changed(session_id=obj.public_id)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        for public_id in queryset.values_list("public_id", flat=True):
            session_changed(session_id=public_id)
        super().delete_queryset(request, queryset)


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ("public_id", "session", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("public_id", "session__public_id")
    readonly_fields = ("public_id", "created_at")
