"""Opie's own settings: every AGENTOS_* the seed names, plus the job knobs."""
from __future__ import annotations

import os

from apps import task_routes
from config.env import env_bool, env_float, env_int, env_list, env_str, parse_prices

AGENTOS_ENABLED = env_bool("AGENTOS_ENABLED", True)
AGENTOS_DEFAULT_HOST = env_str("AGENTOS_DEFAULT_HOST", "127.0.0.1")
AGENTOS_DEFAULT_PORT = env_int("AGENTOS_DEFAULT_PORT", 7777)
AGENTOS_CACHE_TTL = env_int("AGENTOS_CACHE_TTL", 1800)
AGENTOS_INCLUDE_VAULT_AGENTS = env_bool("AGENTOS_INCLUDE_VAULT_AGENTS", False)
AGENTOS_AUTO_RELOAD = env_bool("AGENTOS_AUTO_RELOAD", False)
AGENTOS_DEBUG = env_bool("AGENTOS_DEBUG", False)

# Upper bound on one user message, in characters (413 message_too_long above it).
AGENTOS_MAX_MESSAGE_CHARS = env_int("AGENTOS_MAX_MESSAGE_CHARS", 32_000)
# Default deadline of a job, seconds from acceptance; past it the job ends `expired`.
AGENTOS_JOB_TIMEOUT = env_int("AGENTOS_JOB_TIMEOUT", 600)
# The most a client may ask for with a per-job `timeout`.
AGENTOS_JOB_TIMEOUT_MAX = env_int("AGENTOS_JOB_TIMEOUT_MAX", 3600)
# How long a paused run's pending action (approve a tool call, supply its input) waits for
# a decision, never past the job's own deadline; then the job ends `expired` (apps.jobs.actions).
AGENTOS_ACTION_TIMEOUT = env_int("AGENTOS_ACTION_TIMEOUT", 24 * 3600)
# Fair sharing (apps.jobs.admission): how many of one user's message jobs may run (or be
# on their way to a worker) at once, across all workers; the rest wait in PostgreSQL, so
# one user's backlog never stands in front of another user's jobs. A per-user override is
# in the admin (UserQuota). 0: no limit, and the queue is first come, first served.
AGENTOS_USER_MAX_RUNNING = env_int("AGENTOS_USER_MAX_RUNNING", 20)
# Backpressure: a user's queued jobs (per-user override in the admin), and everyone's; past
# either, job-creating calls answer 429 `queue_full` with Retry-After and write nothing. 0: no cap.
AGENTOS_USER_MAX_QUEUED = env_int("AGENTOS_USER_MAX_QUEUED", 10_000)
AGENTOS_MAX_QUEUED = env_int("AGENTOS_MAX_QUEUED", 100_000)
# User schedules (apps.schedules): beat sends the firing task every AGENTOS_SCHEDULE_TICK
# seconds, and each schedule's due times become ordinary message jobs. A schedule fires no
# more often than AGENTOS_SCHEDULE_MIN_INTERVAL (an interval, or a cron's closest two times);
# a user may keep AGENTOS_USER_MAX_SCHEDULES (0: no cap). A due time older than
# AGENTOS_SCHEDULE_MISFIRE_GRACE when it is found was missed (beat or the workers were down):
# the schedule's `misfire` policy decides whether it still runs, once for the latest.
AGENTOS_SCHEDULE_TICK = env_int("AGENTOS_SCHEDULE_TICK", 5)
AGENTOS_SCHEDULE_MIN_INTERVAL = env_int("AGENTOS_SCHEDULE_MIN_INTERVAL", 60)
AGENTOS_USER_MAX_SCHEDULES = env_int("AGENTOS_USER_MAX_SCHEDULES", 50)
AGENTOS_SCHEDULE_MISFIRE_GRACE = env_int("AGENTOS_SCHEDULE_MISFIRE_GRACE", 60)
# A running job's lease; its worker renews it every few seconds. A worker that
# dies stops renewing, and the sweeper hands the job to another after this long.
AGENTOS_LEASE_SECONDS = env_int("AGENTOS_LEASE_SECONDS", 30)
# Job-creating requests per API token per minute (429 rate_limited above it); 0 turns it off.
AGENTOS_RATE_LIMIT_PER_MINUTE = env_int("AGENTOS_RATE_LIMIT_PER_MINUTE", 600)
# An SSE stream ends after this long; the client reconnects with Last-Event-ID and misses nothing.
AGENTOS_SSE_MAX_SECONDS = env_int("AGENTOS_SSE_MAX_SECONDS", 300)
# A ": keepalive" comment on an idle stream this often, so proxies keep it open.
AGENTOS_SSE_KEEPALIVE_SECONDS = env_float("AGENTOS_SSE_KEEPALIVE_SECONDS", 15.0)
# The longest a long-poll (`jobs/<id>/wait/`, send-message `wait`) holds a request,
# whatever longer `timeout` a client asks for (at most 60): lower it behind a proxy
# that drops idle requests sooner.
AGENTOS_WAIT_MAX_SECONDS = env_float("AGENTOS_WAIT_MAX_SECONDS", 60.0)
# wait/ and events/ re-read the database this often in case Redis lost a publish.
AGENTOS_EVENTS_RECHECK_SECONDS = env_float("AGENTOS_EVENTS_RECHECK_SECONDS", 3.0)
# A running reply's text goes out on SSE (`content.delta`) at most this often; a
# reply that is done sooner publishes none (the terminal event carries it). 0: every chunk.
AGENTOS_STREAM_INTERVAL_MS = env_int("AGENTOS_STREAM_INTERVAL_MS", 50)
# How long an Idempotency-Key's first response is replayed.
AGENTOS_IDEMPOTENCY_TTL = env_int("AGENTOS_IDEMPOTENCY_TTL", 24 * 3600)
# A queued job whose message was lost is sent again after this many seconds.
AGENTOS_REQUEUE_AFTER = env_int("AGENTOS_REQUEUE_AFTER", 60)
# How many times a job is started before it is given up as failed.
AGENTOS_MAX_ATTEMPTS = env_int("AGENTOS_MAX_ATTEMPTS", 3)
# Warm agents kept per worker process (LRU), evicted after this long unused,
# and how many of the most recently used a worker builds when it starts.
AGENTOS_POOL_SIZE = env_int("AGENTOS_POOL_SIZE", 256)
AGENTOS_POOL_IDLE_SECONDS = env_int("AGENTOS_POOL_IDLE_SECONDS", 1800)
AGENTOS_POOL_PREWARM = env_int("AGENTOS_POOL_PREWARM", 20)
# Above this many runs in flight in one worker process, a run gives back its
# database connection for the model call and at its end, so connections stay
# bounded however many runs wait on models.
AGENTOS_DB_CONNECTIONS_PER_WORKER = env_int("AGENTOS_DB_CONNECTIONS_PER_WORKER", 20)
# agentos_start: threads for its database work (agno's session reads and writes, token
# checks), so concurrent runs' storage calls overlap; 1 runs them one after another.
AGENTOS_SERVER_DB_THREADS = env_int("AGENTOS_SERVER_DB_THREADS", 16)
# Model HTTP timeout, seconds.
AGENTOS_MODEL_TIMEOUT = env_float("AGENTOS_MODEL_TIMEOUT", 120.0)
# Connections per provider endpoint per worker process (its agents share them):
# at least the runs one worker holds in flight.
AGENTOS_PROVIDER_MAX_CONNECTIONS = env_int("AGENTOS_PROVIDER_MAX_CONNECTIONS", 200)
# Connections (open and kept alive) of one worker process's webhook client, shared by its
# threads across every receiver: at least the deliveries one worker sends at once.
AGENTOS_WEBHOOK_MAX_CONNECTIONS = env_int("AGENTOS_WEBHOOK_MAX_CONNECTIONS", 500)
# Threads per worker process that send a finished job's webhook (its first attempt) from
# the process that ended it; retries go through beat's dispatcher and the `webhooks` queue.
AGENTOS_WEBHOOK_THREADS = env_int("AGENTOS_WEBHOOK_THREADS", 16)
# Seconds before delivery attempt 1, 2, ... (Standard Webhooks' example schedule); after the
# last one a delivery is failed.
AGENTOS_WEBHOOK_RETRY_SCHEDULE = [float(seconds) for seconds in env_list(
    "AGENTOS_WEBHOOK_RETRY_SCHEDULE", ["0", "5", "300", "1800", "7200", "18000", "36000", "50400", "72000", "86400"])]
# One delivery attempt's HTTP timeout, seconds.
AGENTOS_WEBHOOK_TIMEOUT = env_float("AGENTOS_WEBHOOK_TIMEOUT", 15.0)
# Lets callbacks reach loopback and private addresses: for local development only (`make run` sets it).
AGENTOS_WEBHOOK_ALLOW_PRIVATE = env_bool("AGENTOS_WEBHOOK_ALLOW_PRIVATE", False)

# Queues /readyz requires a live worker on: all four, as the Procfile and Compose run a
# worker for each (uploads would wait forever with no `knowledge` worker).
AGENTOS_READY_QUEUES = env_list("AGENTOS_READY_QUEUES", list(task_routes.QUEUES))

# Provider credentials come from the environment, never from the database.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
OLLAMA_HOST = env_str("OLLAMA_HOST", "http://127.0.0.1:11434")
# Key sent to agents whose provider is `openai_like` (any OpenAI-compatible server).
OPENAI_LIKE_API_KEY = env_str("OPENAI_LIKE_API_KEY", "not-provided")

# agno phones home unless told not to; nothing of ours does.
os.environ.setdefault("AGNO_TELEMETRY", "false")

# Knowledge bases: the embedder (`sentence-transformers`: a model folder, default
# the packaged all-MiniLM-L6-v2; `openai`: a model id, default
# text-embedding-3-small at 384 dimensions, key OPENAI_API_KEY), the largest
# upload, and how many chunks a run retrieves.
AGENTOS_EMBEDDING_PROVIDER = env_str("AGENTOS_EMBEDDING_PROVIDER", "sentence-transformers")
AGENTOS_EMBEDDING_MODEL = env_str("AGENTOS_EMBEDDING_MODEL", "")
AGENTOS_MAX_UPLOAD_BYTES = env_int("AGENTOS_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
AGENTOS_KNOWLEDGE_TOP_K = env_int("AGENTOS_KNOWLEDGE_TOP_K", 4)

# Usage: an optional price table for the usage report's `estimated_cost`, JSON keyed
# `provider:model` (the agent's provider, the run's model id) with USD per million
# input and output tokens, e.g. {"openai:gpt-4o": {"input": 2.5, "output": 10}}.
# A model missing from it has no estimated cost.
AGENTOS_PRICES = parse_prices(env_str("AGENTOS_PRICES", ""))
