"""Structured logs: every job line names its job, agent and session, in plain or JSON."""
from __future__ import annotations

import io
import json
import logging
import threading
from typing import Any, Iterator

import pytest

from config.logging import (
    ContextFilter,
    JsonFormatter,
    PlainFormatter,
    current_log_context,
    log_context,
    logging_config,
)
from tests.conftest import wait_for_job
from tests.factories import make_agent


@pytest.fixture
def captured() -> Iterator[Any]:
    """`captured(fmt, logger)`: that logger also writes into a buffer, through LOGGING's filter and formatter."""
    attached: list[tuple[logging.Logger, logging.Handler, int]] = []

    def capture(log_format: str, name: str = "opie.test") -> tuple[logging.Logger, io.StringIO]:
        plain = logging_config(log_format="plain", level="INFO", agno_level="WARNING")["formatters"]["plain"]
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.addFilter(ContextFilter())
        handler.setFormatter(PlainFormatter(plain["format"]) if log_format == "plain" else JsonFormatter())
        logger = logging.getLogger(name)
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return logger, buffer

    yield capture
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_carries_the_context_and_the_exception(captured):
    logger, buffer = captured("json")

    with log_context(job_id="job-1", agent_id="agent-2", session_id="sess-3"):
        try:
            raise ValueError("the model said no")
        except ValueError:
            logger.exception("run %s failed", "r1", extra={"attempt": 2})
    logger.info("between jobs")

    failed, after = json_lines(buffer)
    assert failed["level"] == "ERROR" and failed["logger"] == "opie.test" and failed["message"] == "run r1 failed"
    assert (failed["job_id"], failed["agent_id"], failed["session_id"]) == ("job-1", "agent-2", "sess-3")
    assert failed["attempt"] == 2 and failed["timestamp"].endswith("Z")
    assert failed["exception"].startswith("Traceback") and "ValueError: the model said no" in failed["exception"]
    assert after == {"timestamp": after["timestamp"], "level": "INFO", "logger": "opie.test",
                     "message": "between jobs"}


def test_the_plain_format_appends_the_ids_before_the_traceback(captured):
    logger, buffer = captured("plain")

    with log_context(job_id="job-abc", agent_id="agent-1", session_id="sess-x", delivery_id="whd-9"):
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logger.exception("boom")
    logger.warning("no job here")

    first, *traceback, last = buffer.getvalue().splitlines()
    assert first.endswith("ERROR opie.test boom job=job-abc agent=agent-1 session=sess-x delivery=whd-9")
    assert traceback[0].startswith("Traceback") and traceback[-1] == "ZeroDivisionError: division by zero"
    assert last.endswith("WARNING opie.test no job here")


def test_the_context_is_reset_after_the_block_even_when_it_raises():
    with log_context(job_id="job-outer"):
        with pytest.raises(RuntimeError):
            with log_context(job_id="job-inner", agent_id="agent-1", session_id=None):
                assert current_log_context() == {"job_id": "job-inner", "agent_id": "agent-1"}
                raise RuntimeError("job crashed")
        assert current_log_context() == {"job_id": "job-outer"}
    assert current_log_context() == {}


def test_a_context_belongs_to_its_thread():
    seen: dict[str, Any] = {}

    def other_job() -> None:
        seen["before"] = current_log_context()
        with log_context(job_id="job-b"):
            seen["inside"] = current_log_context()

    with log_context(job_id="job-a"):
        thread = threading.Thread(target=other_job)
        thread.start()
        thread.join()
        mine = current_log_context()

    assert seen == {"before": {}, "inside": {"job_id": "job-b"}} and mine == {"job_id": "job-a"}


def test_logging_sends_every_record_through_the_context_filter_in_the_chosen_format():
    for log_format, formatter in (("plain", PlainFormatter), ("json", JsonFormatter)):
        config = logging_config(log_format=log_format, level="INFO", agno_level="WARNING")
        console = config["handlers"]["console"]
        assert config["root"]["handlers"] == ["console"] and console["filters"] == ["context"]
        assert config["formatters"][console["formatter"]]["()"] == f"config.logging.{formatter.__name__}"


@pytest.mark.django_db
def test_a_webhook_attempt_logs_with_its_job_id_and_nothing_after(captured, user, settings):
    from apps.jobs.services import message_send
    from apps.webhooks.models import WebhookDelivery
    from workers.execution import execute_message_job
    from workers.webhook_tasks import deliver_webhook_task

    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = False  # refused at once: no network
    job = message_send(user=user, agent=make_agent(user), message="notify me", callback_url="http://127.0.0.1:1/")
    execute_message_job(job.pk)
    delivery = WebhookDelivery.objects.get(job=job)
    _, buffer = captured("json", "apps.webhooks.services")

    outcome = deliver_webhook_task(delivery.pk)

    [line] = json_lines(buffer)
    assert outcome == "failed" and line["message"].startswith(f"delivery {delivery.public_id} attempt 1: failed")
    assert (line["job_id"], line["delivery_id"]) == (job.public_id, delivery.public_id)
    assert current_log_context() == {}


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="plain or json"):
        logging_config(log_format="xml", level="INFO", agno_level="WARNING")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_json_worker_writes_only_json_and_every_job_line_names_its_job(http, start_worker, user):
    worker = start_worker(concurrency=1, LOG_FORMAT="json")  # one pool thread runs both jobs in turn
    agent = make_agent(user)

    jobs = []
    for text in ("first", "second"):
        accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": text}).json()
        jobs.append(wait_for_job(http, accepted["job_id"]))

    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()]  # every line is JSON
    assert all({"timestamp", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["message"].endswith(" ready.") for line in lines)
    assert any(line["logger"] == "workers.signals" and "starting" in line["message"] for line in lines)
    assert any(line["message"] == "worker: Warm shutdown (MainProcess)" for line in lines)
    for job in jobs:
        assert job["status"] == "succeeded", job
        mine = [line for line in lines if line.get("job_id") == job["job_id"]]
        assert [line["message"] for line in mine if line["logger"] == "workers.execution"] == [
            "message job started (attempt 1)", "message job succeeded"]
        assert {(line["agent_id"], line["session_id"]) for line in mine} == {(job["agent_id"], job["session_id"])}
    # Celery logs the task's end on the same pool thread after the job's block: no ids leak into it
    done = [line for line in lines if line["logger"] == "celery.app.trace" and "succeeded in" in line["message"]]
    assert len(done) >= 2 and not any("job_id" in line for line in done)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_agentos_debug_shows_agnos_own_lines_with_the_job_ids(http, start_worker, user):
    worker = start_worker(AGENTOS_DEBUG="true")
    agent = make_agent(user)

    accepted = http.post("send-message/", json={"agent_id": agent.public_id, "message": "hello"}).json()
    job = wait_for_job(http, accepted["job_id"])

    ids = f"job={job['job_id']} agent={job['agent_id']} session={job['session_id']}"
    agno = [line for line in worker.log.read_text().splitlines() if " DEBUG opie.agno " in line]
    assert job["status"] == "succeeded", job
    assert agno and all(line.endswith(ids) for line in agno)


@pytest.mark.django_db
def test_an_ingest_job_logs_with_its_job_and_document_ids_and_nothing_after(captured, user):
    from apps.knowledge.services import document_upload, vault_for
    from workers.tasks import run_ingest_task

    document, _ = document_upload(user=user, kb=vault_for(user=user), name="notes.txt", data=b"\xff\xfe not utf-8")
    _, buffer = captured("json", "workers.knowledge")

    outcome = run_ingest_task(document.job_id)  # the task itself, as a worker calls it

    started, ended = json_lines(buffer)
    assert outcome == "failed" and ended["message"] == "ingest job failed"
    for line in (started, ended):
        assert (line["job_id"], line["document_id"]) == (document.job.public_id, document.public_id)
    assert current_log_context() == {}
