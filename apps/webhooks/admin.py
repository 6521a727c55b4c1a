from django.contrib import admin

from apps.webhooks.models import InboundHook, WebhookAttempt, WebhookDelivery


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    readonly_fields = ("number", "started_at", "duration_ms", "status_code", "error", "next_retry_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("public_id", "event_type", "status", "attempt_count", "url", "next_attempt_at", "created_at")
    list_filter = ("status", "event_type")
    search_fields = ("public_id", "webhook_id", "job__public_id")
    readonly_fields = ("public_id", "webhook_id", "payload", "created_at", "delivered_at")
    inlines = [WebhookAttemptInline]


@admin.register(InboundHook)
class InboundHookAdmin(admin.ModelAdmin):
    list_display = ("public_id", "owner", "agent", "enabled", "created_at")
    readonly_fields = ("public_id", "secret", "created_at")
