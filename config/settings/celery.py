"""Celery: Redis transport, our Job table as the source of truth.

Redis may lose everything: messages carry only a job id, tasks ack late and
requeue when their worker dies, and a sweeper on beat re-sends jobs whose
message or worker was lost (see workers/sweeper.py).
"""
from __future__ import annotations

from apps import task_routes  # a module, not its upper-case names: those would become settings
from config.env import env_bool, env_int, env_str
from config.settings.services import CELERY_BROKER_URL, DB_POOL_SIZE

CELERY_BROKER_URL = CELERY_BROKER_URL
# Our Job rows hold every job's state; django-celery-results keeps results of
# the few tasks that ask for one (sync runs), never the per-message hot path.
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "agents"

# Redis redelivers an unacked message after the visibility timeout: it must
# exceed the longest job, or a running job is delivered again.
_VISIBILITY = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY,
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 25,
    "retry_on_timeout": True,
}
CELERY_VISIBILITY_TIMEOUT = _VISIBILITY

# Celery's Django fixup closes the database connection before and after every
# task unless told to reuse it. Pooled (DB_POOL_SIZE), closing hands the
# connection back to the pool, so let it: a thread must not keep one of the
# pool's few connections between tasks. Unpooled, a new PostgreSQL backend per
# task costs more CPU than a short job itself: reuse, and let busy workers
# release connections themselves (workers/execution.py).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 0 if DB_POOL_SIZE > 0 else 100)

CELERY_WORKER_SEND_TASK_EVENTS = True
# Flower's task list and /metrics come from the workers' events (received, started,
# succeeded). A `task-sent` event would add a second Redis publish to every accepted
# message, on the request path; turn it on to see tasks in Flower before a worker takes them.
CELERY_TASK_SEND_SENT_EVENT = env_bool("CELERY_TASK_SEND_SENT_EVENT", False)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Flower (`manage.py opie_flower`) refuses to start without credentials: user:password[,user2:password2].
FLOWER_BASIC_AUTH = env_str("FLOWER_BASIC_AUTH")
# Loopback by default; a container listens on 0.0.0.0 behind its published 127.0.0.1 port.
FLOWER_ADDRESS = env_str("FLOWER_ADDRESS", "127.0.0.1")
FLOWER_PORT = env_int("FLOWER_PORT", 5555)

CELERY_BEAT_SCHEDULER = "workers.beat:OpieDatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "opie-sweep-jobs": {
        "task": task_routes.SWEEP_JOBS.name,
        "schedule": float(env_int("AGENTOS_SWEEP_INTERVAL", 30)),
        "options": {"queue": task_routes.SWEEP_JOBS.queue, "expires": 25},
    },
    # the default schedule; beat (workers/beat.py) creates it in the database when it is
    # missing and never overwrites it, so a change in the Django admin (Periodic tasks) stays
    "opie-agent-sync": {
        "task": task_routes.PERIODIC_SYNC.name,
        "schedule": float(env_int("AGENTOS_SYNC_INTERVAL", 3600)),
        "options": {"queue": task_routes.PERIODIC_SYNC.queue, "expires": 600},
    },
    "opie-dispatch-webhooks": {
        "task": task_routes.DISPATCH_DUE_WEBHOOKS.name,
        "schedule": float(env_int("AGENTOS_WEBHOOK_DISPATCH_INTERVAL", 5)),
        "options": {"queue": task_routes.DISPATCH_DUE_WEBHOOKS.queue, "expires": 5},
    },
    # user schedules (apps.schedules): due times become message jobs; a tick that finds
    # nothing due is one indexed query
    "opie-fire-schedules": {
        "task": task_routes.FIRE_SCHEDULES.name,
        "schedule": float(env_int("AGENTOS_SCHEDULE_TICK", 5)),
        "options": {"queue": task_routes.FIRE_SCHEDULES.queue, "expires": max(1, env_int("AGENTOS_SCHEDULE_TICK", 5))},
    },
}
