"""The naive design, for comparison: a prefork worker (concurrency 2) that builds
the agno agent from the database for every message. Same claim and reply
services as Opie, so only the execution model differs."""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
app = Celery("naive", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = "naive"
app.conf.task_queues = None


@app.task(name="naive.run_message")
def run_message(job_id: int) -> str:
    from agno.models.message import Message

    from apps.chat.selectors import session_messages
    from apps.jobs.lifecycle import job_claim, job_succeed_message
    from apps.opie.agentos.config import agent_os_config

    job = job_claim(job_id=job_id, worker="naive")
    if job is None:
        return "skipped"
    agent = agent_os_config.create_agent_from_django(job.agent, job.owner, job.session.public_id)  # every time
    history = [Message(role=m.role, content=m.content)
               for m in session_messages(session=job.session, through_job_id=job.pk)]
    output = agent.run(history, session_id=job.session.public_id, run_id=job.public_id)
    job_succeed_message(job=job, content=str(output.content), tool_calls=[], metrics={})
    return "succeeded"
