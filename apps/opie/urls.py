from django.urls import path

from apps.opie.agentos import schedule_views, views

app_name = "opie"
urlpatterns = [
    path("", views.home, name="home"),
    path("agentos/", views.dashboard, name="dashboard"),
    path("agentos/agents/", views.agents, name="agents"),
    path("agentos/agents/<str:agent_id>/edit/", views.agent_edit, name="agent_edit"),
    path("agentos/chat/<str:agent_id>/", views.chat, name="chat"),
    path("agentos/chat/<str:agent_id>/send/", views.chat_send, name="chat_send"),
    path("agentos/jobs/<str:job_id>/reply/", views.job_reply, name="job_reply"),
    path("agentos/jobs/<str:job_id>/events/", views.job_events, name="job_events"),
    path("agentos/jobs/<str:job_id>/cancel/", views.job_cancel_request, name="job_cancel"),
    path("agentos/jobs/<str:job_id>/actions/", views.job_actions, name="job_actions"),
    path("agentos/jobs/<str:job_id>/actions/<str:action_id>/", views.action_decide, name="action_decide"),
    path("agentos/approvals/", views.approvals, name="approvals"),
    path("agentos/vault/upload/", views.vault_upload, name="vault_upload"),
    path("agentos/vault/documents/<str:document_id>/", views.vault_document, name="vault_document"),
    path("agentos/session/<str:session_id>/", views.session_page, name="session"),
    path("agentos/session/<str:session_id>/rename/", views.session_rename_view, name="session_rename"),
    path("agentos/session/<str:session_id>/delete/", views.session_delete_view, name="session_delete"),
    path("agentos/account/", views.account, name="account"),
    path("agentos/usage/", views.usage, name="usage"),
    path("agentos/schedules/", schedule_views.schedules, name="schedules"),
    path("agentos/schedules/preview/", schedule_views.schedule_preview, name="schedule_preview"),
    path("agentos/schedules/<str:schedule_id>/", schedule_views.schedule_detail, name="schedule"),
    path("agentos/schedules/<str:schedule_id>/edit/", schedule_views.schedule_edit, name="schedule_edit"),
    path("agentos/schedules/<str:schedule_id>/pause/", schedule_views.schedule_action, {"action": "pause"},
         name="schedule_pause"),
    path("agentos/schedules/<str:schedule_id>/resume/", schedule_views.schedule_action, {"action": "resume"},
         name="schedule_resume"),
    path("agentos/schedules/<str:schedule_id>/run/", schedule_views.schedule_action, {"action": "run"},
         name="schedule_run"),
    path("agentos/schedules/<str:schedule_id>/delete/", schedule_views.schedule_action, {"action": "delete"},
         name="schedule_delete"),
]
