"""Usage figures: recorded with each reply, read from the daily rollup, per user only."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.chat.models import ChatMessage
from apps.jobs.services import message_record, message_send
from apps.usage.models import UsageDaily
from apps.usage.selectors import report_sql
from tests.factories import make_agent, make_token, make_user
from workers.execution import execute_message_job

pytestmark = pytest.mark.django_db

URL = "/api/v1/agentos/usage/"


def run(user, agent, text):
    job = message_send(user=user, agent=agent, message=text)
    assert execute_message_job(job.pk) == "succeeded"
    return ChatMessage.objects.get(job=job, role="assistant")


def rows(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()["rows"]


@pytest.fixture
def two_users(user, other_user, agent):
    """alice: two runs (one with a tool call); mallory: one run on her own agent."""
    theirs = make_agent(other_user, name="Theirs")
    replies = [run(user, agent, "Hello there"), run(user, agent, "/tool calculator 2+2"),
               run(other_user, theirs, "Just one")]
    return agent, theirs, replies


def test_each_run_adds_its_figures_to_its_users_day(two_users, user):
    agent, _, replies = two_users
    row = UsageDaily.objects.get(user=user)
    mine = replies[:2]
    assert (row.day, row.agent_public_id, row.provider, row.model) == (timezone.now().date(), agent.public_id,
                                                                        "local", "echo")
    assert row.runs == 2 and row.tool_calls == 1
    assert row.input_tokens == sum(r.metrics["input_tokens"] for r in mine) > 0
    assert row.output_tokens == sum(r.metrics["output_tokens"] for r in mine) > 0
    # model calls counted from agno's messages: one answer, and a tool round plus the answer
    assert [r.metrics["model_calls"] for r in mine] == [1, 2] and row.model_calls == 3
    assert row.duration_ms == pytest.approx(sum(r.metrics["duration_ms"] for r in mine), abs=2)


def test_two_users_see_only_their_own_figures(two_users, api, other_api):
    agent, theirs, _ = two_users
    for group_by in ("day", "agent", "model"):
        mine, their = rows(api, group_by=group_by), rows(other_api, group_by=group_by)
        assert sum(r["runs"] for r in mine) == 2 and sum(r["runs"] for r in their) == 1
    assert [r["agent_id"] for r in rows(api, group_by="agent")] == [agent.public_id]
    assert [r["agent_id"] for r in rows(other_api, group_by="agent")] == [theirs.public_id]
    assert api.get(URL).json()["user"] == "alice" and other_api.get(URL).json()["user"] == "mallory"


def test_group_by_names_its_rows(two_users, api):
    today = timezone.now().date().isoformat()
    (day,) = rows(api)
    assert day["day"] == today and day["runs"] == 2 and day["total_tokens"] == day["input_tokens"] + day[
        "output_tokens"]
    (model,) = rows(api, group_by="model")
    assert (model["provider"], model["model"], model["runs"]) == ("local", "echo", 2)
    assert list(model) == ["provider", "model", "runs", "model_calls", "tool_calls", "input_tokens",
                           "output_tokens", "duration_ms", "total_tokens", "estimated_cost"]
    assert model["estimated_cost"] is None  # no price table


def test_from_and_to_bound_the_days(user, agent, api):
    today = timezone.now().date()
    for days_ago in (0, 3, 40):
        UsageDaily.objects.create(user=user, day=today - timedelta(days=days_ago), agent_public_id=agent.public_id,
                                  provider="local", model="echo", runs=days_ago + 1)
    assert [r["runs"] for r in rows(api)] == [4, 1]  # the last 30 days by default
    body = api.get(URL, {"from": (today - timedelta(days=40)).isoformat(),
                         "to": (today - timedelta(days=3)).isoformat()}).json()
    assert [r["runs"] for r in body["rows"]] == [41, 4] and body["from"] == (today - timedelta(days=40)).isoformat()
    assert rows(api, **{"from": today.isoformat(), "to": today.isoformat()})[0]["runs"] == 1
    assert rows(api, to="2000-01-01") == []


def test_the_csv_has_the_json_rows(two_users, api, settings):
    settings.AGENTOS_PRICES = {"local:echo": {"input": 1000.0, "output": 2000.0}}
    for group_by in ("day", "agent", "model"):
        body = rows(api, group_by=group_by)
        response = api.get(URL, {"group_by": group_by, "format": "csv"})
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(response.content.decode())))
        assert table[0] == list(body[0])
        assert table[1:] == [[str(v) for v in row.values()] for row in body]
    (row,) = rows(api, group_by="model")
    assert row["estimated_cost"] == pytest.approx(
        (row["input_tokens"] * 1000 + row["output_tokens"] * 2000) / 1e6)


def test_staff_may_read_another_users_figures(two_users, other_user):
    staff = make_user("root", is_staff=True)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(staff)}")
    body = client.get(URL, {"user": "mallory"}).json()
    assert body["user"] == "mallory" and sum(r["runs"] for r in body["rows"]) == 1
    assert client.get(URL).json()["rows"] == []  # staff's own figures by default
    missing = client.get(URL, {"user": "nobody"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "user_not_found"


def test_others_may_not_name_a_user(two_users, api):
    response = api.get(URL, {"user": "mallory"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "staff_only"


@pytest.mark.parametrize("params", [{"group_by": "week"}, {"format": "xml"}, {"from": "yesterday"},
                                    {"to": "2024-02-30"}, {"from": "2024-02-02", "to": "2024-02-01"},
                                    {"from": "0001-01-01", "to": "9999-12-31"}, {"to": "0001-01-01"}])
def test_bad_parameters_are_400_with_the_error_shape(api, params):
    response = api.get(URL, params)
    if params == {"to": "0001-01-01"}:  # the default range clamps at the first day there is
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) >= {"code", "message"}


def test_an_agentos_run_is_counted_too(user, agent):
    session = message_send(user=user, agent=agent, message="x").session
    message_record(user=user, agent=agent, session=session, run_id="run-agentos-1", message="hi", reply="hello",
                   tool_calls=[{"name": "calculator"}], metrics={"input_tokens": 7, "output_tokens": 3,
                                                                "duration": 0.25})
    row = UsageDaily.objects.get(user=user)
    assert (row.runs, row.input_tokens, row.output_tokens, row.tool_calls, row.model_calls, row.duration_ms) == (
        1, 7, 3, 1, 2, 250)
    assert (row.provider, row.model) == ("local", "echo")


@pytest.mark.parametrize("group_by", ["day", "agent", "model"])
def test_the_report_is_an_index_scan_of_the_users_days(user, group_by):
    """Queries read the rollup through its unique key's index (user, day, ...): a range
    scan of the user's days, not a scan of the table, whatever its size."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny test table would be read whole otherwise
        cursor.execute("EXPLAIN (FORMAT JSON) " + report_sql(group_by),
                       {"user_id": user.pk, "from": date(2025, 1, 1), "to": date(2025, 1, 31)})
        plan = json.dumps(cursor.fetchone()[0])
    assert "usage_daily_key" in plan and ("Index Scan" in plan or "Index Only Scan" in plan)
    assert '"Index Cond": "((user_id = ' in plan and "day >=" in plan



def test_the_usage_page_shows_its_users_figures(two_users, client, user, other_user):
    client.force_login(user)
    page = client.get("/agentos/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and two_users[0].public_id in html and two_users[1].public_id not in html
    client.force_login(other_user)
    assert two_users[0].public_id not in client.get("/agentos/usage/").content.decode()
