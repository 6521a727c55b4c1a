"""User schedules with the real processes: Celery beat (the product's database
scheduler, as `make run` starts it) sends the firing tick, a real worker fires the
due schedules and runs their jobs, and the webhooks reach a real receiver.

Every process ticks each second and a schedule may run every 2 s, so a scenario
takes seconds, not minutes."""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
from standardwebhooks import Webhook

from apps.jobs.models import Job
from apps.schedules.models import Schedule, ScheduleRun
from apps.webhooks.services import webhook_secret_get_or_create
from tests.conftest import ROOT, end_groups, stop_group, worker_env
from tests.test_metrics import samples, scrape, value
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FAST = {"AGENTOS_SCHEDULE_TICK": "1", "AGENTOS_SCHEDULE_MIN_INTERVAL": "1", "AGENTOS_SCHEDULE_MISFIRE_GRACE": "3",
        "AGENTOS_WEBHOOK_ALLOW_PRIVATE": "1", "AGENTOS_WEBHOOK_DISPATCH_INTERVAL": "1"}


class Beat:
    """`celery beat` with the product's scheduler, as the Procfile starts it."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "--scheduler",
             "workers.beat:OpieDatabaseScheduler", "--loglevel", "INFO"],
            cwd=ROOT, env=worker_env(**FAST), stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def ticks(self) -> int:
        return self.log.read_text().count("Scheduler: Sending due task opie-fire-schedules")

    def wait_ticking(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ticks() == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"beat sent no tick:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_group(self.proc)
        self._out.close()


@pytest.fixture
def start_beat(transactional_db: Any, tmp_path: Path) -> Iterator[Any]:
    started: list[Beat] = []

    def start() -> Beat:
        beat = Beat(tmp_path / f"beat{len(started)}.log")
        started.append(beat)
        return beat

    yield start
    end_groups([beat.proc for beat in started])
    for beat in started:
        beat.stop()  # closes its log


@pytest.fixture
def fast(settings: Any) -> None:
    """The test process (the API) takes the same limits as the processes."""
    settings.AGENTOS_SCHEDULE_MIN_INTERVAL = 1
    settings.AGENTOS_SCHEDULE_MISFIRE_GRACE = 3
    settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE = True
    settings.AGENTOS_RATE_LIMIT_PER_MINUTE = 0


def schedule(http: Any, agent: Any, **fields: Any) -> dict[str, Any]:
    answer = http.post("schedules/", json={"agent_id": agent.public_id, "message": "check the feed",
                                           "interval_seconds": 2, **fields})
    assert answer.status_code == 201, answer.text
    return answer.json()


def runs(http: Any, schedule_id: str) -> list[dict[str, Any]]:
    return http.get(f"schedules/{schedule_id}/runs/?limit=100").json()["runs"]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_schedule_fires_on_beat_and_its_job_succeeds_with_its_webhook(http, agent, user, fast, start_worker,
                                                                          start_beat, live_server):
    fired_before = value(samples(scrape(live_server)), "opie_schedule_firings_total", outcome="fired")
    start_worker(**FAST)
    start_beat().wait_ticking()
    with Receiver() as receiver:
        created = schedule(http, agent, callback_url=receiver.url + "/hook")
        wait_until(lambda: any(r["status"] == "succeeded" for r in runs(http, created["id"])), 30,
                   "no run succeeded")
        done = next(r for r in runs(http, created["id"]) if r["status"] == "succeeded")
        job = http.get(f"jobs/{done['job_id']}/").json()
        assert job["kind"] == "message" and job["result"]["content"]
        assert job["session_id"] == done["session_id"]
        wait_until(lambda: any(r["path"] == "/hook" for r in receiver.requests), 20, "no webhook arrived")
    secret = webhook_secret_get_or_create(user=user)
    events = [Webhook(secret).verify(r["body"], r["headers"]) for r in receiver.requests]
    succeeded = [e for e in events if e["type"] == "job.succeeded"]
    assert done["job_id"] in {e["data"]["job_id"] for e in succeeded}
    body = http.get(f"schedules/{created['id']}/").json()
    assert body["last_run_at"] is not None and body["next_run_at"] > body["last_run_at"]
    fired = value(samples(scrape(live_server)), "opie_schedule_firings_total", outcome="fired") - fired_before
    assert fired >= 1  # counted by the worker that fired it, read from the web's /metrics


def test_two_beats_running_together_make_one_job_per_due_time(http, agent, fast, start_worker, start_beat):
    start_worker(concurrency=16, **FAST)
    start_worker(concurrency=16, **FAST)  # two workers: the two beats' ticks run at the same time
    beats = [start_beat(), start_beat()]
    for beat in beats:
        beat.wait_ticking()
    created = [schedule(http, agent, interval_seconds=2) for _ in range(5)]
    time.sleep(9)
    for beat in beats:
        assert beat.ticks() >= 5  # both were sending ticks all along
        beat.stop()
    for item in created:
        fired = ScheduleRun.objects.filter(schedule__public_id=item["id"])
        assert fired.count() >= 3, item
        per_due = Counter(fired.values_list("due_at", flat=True))
        assert max(per_due.values()) == 1
        assert fired.exclude(job=None).count() == fired.count()
    assert Job.objects.filter(kind="message").count() == ScheduleRun.objects.count()


def test_after_beat_was_down_a_schedule_runs_once_or_skips_as_its_misfire_says(http, agent, fast, start_worker,
                                                                                start_beat):
    start_worker(**FAST)
    beat = start_beat()
    beat.wait_ticking()
    latest = schedule(http, agent, interval_seconds=2)
    skip = schedule(http, agent, interval_seconds=2, misfire="skip")
    wait_until(lambda: len(runs(http, latest["id"])) >= 1 and len(runs(http, skip["id"])) >= 1, 20, "no first run")
    beat.stop()
    time.sleep(1)  # the last tick's firings commit
    before = {sid: len(runs(http, sid)) for sid in (latest["id"], skip["id"])}
    time.sleep(8)  # down: four due times of each pass, the oldest beyond the 3 s grace
    assert {sid: len(runs(http, sid)) for sid in before} == before  # nothing fires without beat
    start_beat().wait_ticking()
    wait_until(lambda: len(runs(http, latest["id"])) > before[latest["id"]]
               and len(runs(http, skip["id"])) > before[skip["id"]], 20, "no firing after the restart")

    caught_up = runs(http, latest["id"])[-before[latest["id"]] - 1]  # the first run after the restart
    assert caught_up["misfire"] == "run_latest" and caught_up["missed"] >= 2 and caught_up["job_id"]
    skipped = runs(http, skip["id"])[-before[skip["id"]] - 1]
    assert skipped["misfire"] == "skip" and skipped["missed"] >= 2
    # the missed times made no job; the latest one made one only if it was still within the grace
    assert (skipped["status"], skipped["job_id"]) == ("skipped", None) or skipped["job_id"]
    assert Job.objects.filter(schedule_run__schedule__public_id=skip["id"]).count() == len(
        [r for r in runs(http, skip["id"]) if r["job_id"]])
    # one run for the outage, not a storm: the next ones are on time again
    after = [r for r in runs(http, latest["id"])[: -before[latest["id"]] - 1]]
    assert all(r["misfire"] is None for r in after)
    assert Schedule.objects.get(public_id=skip["id"]).enabled


def test_a_paused_schedule_does_not_fire_until_resumed(http, agent, fast, start_worker, start_beat):
    start_worker(**FAST)
    start_beat().wait_ticking()
    created = schedule(http, agent, interval_seconds=2, enabled=False)
    time.sleep(4)
    assert runs(http, created["id"]) == []
    assert http.post(f"schedules/{created['id']}/resume/").json()["enabled"] is True
    wait_until(lambda: len(runs(http, created["id"])) >= 1, 15, "no run after resume")
    http.post(f"schedules/{created['id']}/pause/")
    time.sleep(1.5)  # a tick already under way may still fire once
    count = len(runs(http, created["id"]))
    time.sleep(4)
    assert len(runs(http, created["id"])) == count
