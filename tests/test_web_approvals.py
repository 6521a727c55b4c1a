"""Paused runs in the web interface: the action cards in the chat, the Approvals page,
the dashboard's count, the agent page's policies. The runs pause for real: the job runs
in process (`execute_message_job`, as a worker's task body does) until its tool's policy
stops it, and after a decision from the web it runs on to its reply."""
from __future__ import annotations

from typing import Any

from django.test import Client

from apps.agents.admin import AgentForm
from apps.chat.models import ChatMessage
from apps.jobs.models import ActionDecision, Job, JobAction
from apps.jobs.services import message_send
from tests.factories import make_agent, make_user
from workers.execution import execute_message_job


def paused_job(user: Any, agent: Any, message: str = "/tool calculator 2+2") -> Job:
    """A message whose run reached a tool with policy approve or input: the job is `requires_action`."""
    job = message_send(user=user, agent=agent, message=message)
    execute_message_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.REQUIRES_ACTION, (job.status, job.error_message)
    return job


def approving_agent(user: Any, **fields: Any) -> Any:
    return make_agent(user, tools=["calculator"], tool_policies={"calculator": "approve"}, **fields)


def action_of(job: Job) -> JobAction:
    return JobAction.objects.get(job=job, status=JobAction.Status.PENDING)


def decide(client: Client, job: Job, action: JobAction, **form: str) -> Any:
    return client.post(f"/agentos/jobs/{job.public_id}/actions/{action.public_id}/", form)


def test_the_approvals_page_lists_only_the_users_pending_actions_newest_first(alice, user, other_user):
    first = paused_job(user, approving_agent(user, name="Counter"))
    second = paused_job(user, approving_agent(user, name="Summer"), "/tool calculator 3*3")
    decided = paused_job(user, approving_agent(user, name="Decided"))
    decide(alice, decided, action_of(decided), decision="approve")
    theirs = paused_job(other_user, approving_agent(other_user, name="Mallory's"))

    page = alice.get("/agentos/approvals/").content.decode()

    shown = {a.public_id for a in JobAction.objects.all() if f'id="action-{a.public_id}"' in page}
    assert shown == {action_of(second).public_id, action_of(first).public_id}
    assert page.index(action_of(second).public_id) < page.index(action_of(first).public_id), "newest first"
    assert action_of(theirs).public_id not in page and "Mallory&#x27;s" not in page
    assert "Counter" in page and "Summer" in page and "Decided" not in page
    chat = f'/agentos/chat/{first.agent.public_id}/?session={first.session.public_id}'
    assert f'href="{chat}"' in page, "each action links to the chat of its session"
    assert "&quot;expression&quot;: &quot;3*3&quot;" in page and "expires" in page
    assert ">Approve</button>" in page and ">Reject</button>" in page


def test_the_approvals_page_says_when_nothing_waits(alice):
    assert "Nothing waits for you." in alice.get("/agentos/approvals/").content.decode()


def test_the_dashboard_counts_the_actions_waiting_for_the_user(alice, user, other_user):
    assert "No action is waiting" in alice.get("/agentos/").content.decode()
    paused_job(user, approving_agent(user))
    paused_job(user, approving_agent(user))
    paused_job(other_user, approving_agent(other_user))

    page = alice.get("/agentos/").content.decode()

    assert '<a href="/agentos/approvals/">2 actions waiting for a decision</a>' in page


def test_a_chat_loaded_while_the_run_waits_shows_the_card_and_its_stream_fetches_it(alice, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)

    chat = alice.get(f"/agentos/chat/{job.agent.public_id}/?session={job.session.public_id}").content.decode()
    fragment = alice.get(f"/agentos/jobs/{job.public_id}/actions/").content.decode()
    reply = alice.get(f"/agentos/jobs/{job.public_id}/reply/").content.decode()

    for html in (chat, fragment, reply):
        assert f'id="action-{action.public_id}"' in html
        assert f'hx-post="/agentos/jobs/{job.public_id}/actions/{action.public_id}/"' in html
        assert "<strong>calculator</strong>" in html and "{\n  &quot;expression&quot;: &quot;2+2&quot;\n}" in html
        assert ">Approve</button>" in html and ">Reject</button>" in html and 'name="note"' in html
    for html in (chat, reply):  # the reply keeps following the stream, which goes on after the decision
        assert "Waiting for your decision…" in html
        assert f'data-events="/agentos/jobs/{job.public_id}/events/"' in html
        assert f'data-actions="/agentos/jobs/{job.public_id}/actions/"' in html


def test_approving_from_the_card_records_the_decision_and_the_run_goes_on(alice, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)

    answer = decide(alice, job, action, decision="approve", note="fine by me")

    assert answer.status_code == 200 and "Approved — the run goes on." in answer.content.decode()
    decision = ActionDecision.objects.get(action=action)
    assert (decision.decision, decision.note, decision.decided_by, decision.staff_override) == (
        "approved", "fine by me", user, False)
    assert decision.arguments_after == decision.arguments_before == {"expression": "2+2"}
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
    execute_message_job(job.pk)  # what the worker woken by the decision does
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED
    assert ChatMessage.objects.get(job=job, role="assistant").content == "calculator returned: 4"
    assert f'id="action-{action.public_id}"' not in alice.get("/agentos/approvals/").content.decode()


def test_rejecting_from_the_card_tells_the_model_and_the_tool_never_runs(alice, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)

    answer = decide(alice, job, action, decision="reject", note="not now")

    assert answer.status_code == 200 and "Rejected — the run goes on." in answer.content.decode()
    assert ActionDecision.objects.get(action=action).decision == "rejected"
    execute_message_job(job.pk)
    action.refresh_from_db()
    assert action.status == JobAction.Status.REJECTED and action.executions == 0
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED


def test_an_input_action_is_a_small_form_whose_values_the_tool_runs_with(alice, user):
    agent = make_agent(user, tools=["calculator"], tool_policies={"calculator": "input"})
    job = paused_job(user, agent, "/tool calculator")
    action = action_of(job)
    card = alice.get(f"/agentos/jobs/{job.public_id}/actions/").content.decode()
    assert 'name="value:expression"' in card and ">Submit</button>" in card and ">Approve</button>" not in card

    missing = decide(alice, job, action, decision="input")
    answer = decide(alice, job, action, decision="input", **{"value:expression": "5*5"})

    assert missing.status_code == 400 and 'class="error"' in missing.content.decode()
    assert answer.status_code == 200 and "Sent — the run goes on." in answer.content.decode()
    decision = ActionDecision.objects.get(action=action)
    assert decision.decision == "input" and decision.values == {"expression": "5*5"}
    execute_message_job(job.pk)
    assert ChatMessage.objects.get(job=job, role="assistant").content == "calculator returned: 25"


def test_a_second_decision_or_a_form_without_one_is_a_note_on_the_card(alice, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)
    decide(alice, job, action, decision="approve")

    again = decide(alice, job, action, decision="reject")
    neither = decide(alice, job, action, note="forgot to choose")

    assert again.status_code == 409 and again.content.decode().startswith('<p class="error" role="alert">')
    assert "already decided" in again.content.decode()
    assert neither.status_code == 400 and "Choose Approve or Reject." in neither.content.decode()
    assert ActionDecision.objects.get(action=action).decision == "approved"


def test_someone_elses_paused_job_is_404_on_every_approval_path(alice, mallory, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)

    assert decide(mallory, job, action, decision="approve").status_code == 404
    assert mallory.get(f"/agentos/jobs/{job.public_id}/actions/").status_code == 404
    assert action.public_id not in mallory.get("/agentos/approvals/").content.decode()
    assert not ActionDecision.objects.exists() and action_of(job).status == JobAction.Status.PENDING
    other = paused_job(user, approving_agent(user))
    # an action of another job of the user's, addressed through this one: not found either
    assert decide(alice, job, action_of(other), decision="approve").status_code == 404


def test_the_web_decides_with_csrf_only(user):
    job = paused_job(user, approving_agent(user))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    refused = decide(client, job, action_of(job), decision="approve")

    assert refused.status_code == 403 and not ActionDecision.objects.exists()


def test_the_agent_page_saves_tool_policies_and_bumps_the_version(alice, user):
    agent = make_agent(user, tools=["calculator", "current_time"])
    page = alice.get(f"/agentos/agents/{agent.public_id}/edit/").content.decode()
    assert 'name="policy_calculator"' in page and '<label class="visually-hidden" for="policy_calculator">' in page
    form = {"name": "Helper", "tools": ["calculator", "current_time"], "visibility": "private",
            "model_provider": "local", "model_id": "echo"}

    saved = alice.post(f"/agentos/agents/{agent.public_id}/edit/", {
        **form, "policy_calculator": "approve", "policy_current_time": "auto"})

    assert saved.status_code == 302
    agent.refresh_from_db()
    assert agent.tool_policies == {"calculator": "approve"} and agent.version == 2
    shown = alice.get(f"/agentos/agents/{agent.public_id}/edit/").content.decode()
    assert "<option selected>approve</option>" in shown
    wrong = alice.post(f"/agentos/agents/{agent.public_id}/edit/", {**form, "policy_calculator": "always"})
    assert wrong.status_code == 200 and "must be one of auto, approve, input" in wrong.content.decode()
    agent.refresh_from_db()
    assert agent.tool_policies == {"calculator": "approve"} and agent.version == 2


def test_the_admin_shows_pauses_actions_and_decisions_as_a_read_only_audit(alice, user):
    job = paused_job(user, approving_agent(user))
    action = action_of(job)
    decide(alice, job, action, decision="reject", note="wrong sum")
    decision = ActionDecision.objects.get()
    staff = Client()
    staff.force_login(make_user("root", is_staff=True, is_superuser=True))

    job_page = staff.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    action_page = staff.get(f"/admin/jobs/jobaction/{action.pk}/change/").content.decode()
    audit = staff.get(f"/admin/jobs/actiondecision/{decision.pk}/change/")

    assert action.public_id in job_page and "Run pauses" in job_page
    assert "wrong sum" in action_page and "alice" in action_page
    assert audit.status_code == 200 and "wrong sum" in audit.content.decode()
    assert 'name="note"' not in audit.content.decode(), "read-only"
    assert staff.get("/admin/jobs/actiondecision/add/").status_code == 403
    assert staff.get("/admin/jobs/runpause/").status_code == 200


def test_the_agent_admin_refuses_an_unknown_tool_policy(user):
    agent = approving_agent(user)
    data = {"owner": user.pk, "name": agent.name, "model_provider": "local", "model_id": "echo",
            "model_options": "{}", "tools": '["calculator"]', "visibility": "private", "version": agent.version}

    wrong = AgentForm(data={**data, "tool_policies": '{"calculator": "always"}'}, instance=agent)
    right = AgentForm(data={**data, "tool_policies": '{"calculator": "input"}'}, instance=agent)

    assert not wrong.is_valid() and "must be one of auto, approve, input" in str(wrong.errors)
    assert right.is_valid(), right.errors
