from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import F, QuerySet
from django.http import HttpRequest

from apps.agents.models import Agent
from apps.agents.providers import validate_model_spec
from apps.agents.services import agent_audience, agent_cache_invalidate_on_commit
from apps.agents.tools import validate_tool_names, validate_tool_policies
from apps.common import DomainError


class AgentForm(forms.ModelForm):
    """The API's checks apply here too: no unknown option (such as an `api_key`)
    gets into the database through the admin; keys come from the environment. Nor
    an unknown tool, or a tool policy other than auto / approve / input."""

    class Meta:
        model = Agent
        fields = "__all__"

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            validate_model_spec(data.get("model_provider", ""), data.get("model_id", ""),
                                data.get("model_options") or {})
            validate_tool_names(data.get("tools") or [])
            validate_tool_policies(data.get("tool_policies") or {})
        except DomainError as exc:
            raise ValidationError(exc.message) from None
        return data


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ("name", "public_id", "owner", "model_provider", "model_id", "visibility", "version", "enabled")
    list_filter = ("visibility", "enabled", "model_provider")
    search_fields = ("name", "public_id", "owner__username")
    readonly_fields = ("public_id", "version", "created_at", "updated_at")
    filter_horizontal = ("shared_with",)
    fieldsets = (
        (None, {"fields": ("public_id", "owner", "name", "description", "instructions", "enabled", "is_vault")}),
        ("Model", {"fields": ("model_provider", "model_id", "model_options")}),
        ("Tools", {"fields": ("tools", "tool_policies"),
                   "description": 'Tool names, e.g. ["calculator"]; policies, e.g. {"calculator": "approve"} '
                                  "(auto, the default, runs a call at once; approve and input pause the run "
                                  "for a person)."}),
        ("Sharing", {"fields": ("visibility", "shared_with")}),
        ("Sync", {"fields": ("sync_status", "sync_error", "synced_at", "config_hash"), "classes": ("collapse",)}),
        ("Version", {"fields": ("version", "created_at", "updated_at")}),
    )

    # The admin writes around apps.agents.services, so it invalidates the cache
    # itself: a change of sharing made here must reach permissions at once too.
    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if change:
            # who the agent concerned before the edit (on the instance: the admin is shared by threads)
            obj._cache_before = agent_audience(Agent.objects.get(pk=obj.pk))
            # an edit in the admin must invalidate warm pools like an API edit does
            obj.version = F("version") + 1
        super().save_model(request, obj, form, change)
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):  # type: ignore[no-untyped-def]
        super().save_related(request, form, formsets, change)  # shared_with is saved here
        agent_cache_invalidate_on_commit(agent=form.instance, before=getattr(form.instance, "_cache_before", None))

    def delete_model(self, request: HttpRequest, obj: Agent) -> None:
        self._invalidate_deleted(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            self._invalidate_deleted(agent)
        super().delete_queryset(request, queryset)

    @staticmethod
    def _invalidate_deleted(agent: Agent) -> None:
        agent_cache_invalidate_on_commit(agent=agent,
                                         session_ids=list(agent.sessions.values_list("public_id", flat=True)))
