"""Prometheus metrics (`GET /metrics`, apps.metrics)."""
from __future__ import annotations

from config.env import ROOT_DIR, env_str

# The directory every process of one deployment (web processes, workers, beat) writes its
# metrics to, as files prometheus_client's multiprocess mode reads at scrape time: the
# web's /metrics then shows the whole system. Shared by all of them (a shared volume in
# Compose), emptied once when the deployment starts (`manage.py opie_metrics_reset`).
OPIE_METRICS_DIR = env_str("OPIE_METRICS_DIR") or str(ROOT_DIR / "var" / "metrics")
# The bearer token /metrics asks for; unset: /metrics answers loopback clients only.
OPIE_METRICS_TOKEN = env_str("OPIE_METRICS_TOKEN")
