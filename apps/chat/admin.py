from django.contrib import admin

from apps.chat.models import ChatMessage, ChatSession


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


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ("public_id", "session", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("public_id", "session__public_id")
    readonly_fields = ("public_id", "created_at")
