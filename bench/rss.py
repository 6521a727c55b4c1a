"""RSS of a fresh worker-like process with N warm agents in its pool (prints JSON)."""
from __future__ import annotations

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

import psutil  # noqa: E402

from apps.agents.models import Agent  # noqa: E402
from workers.pool import AgentPool  # noqa: E402

count = int(sys.argv[1])
agents = list(Agent.objects.filter(name__startswith="pool-")[:count])
process = psutil.Process()
pool = AgentPool(capacity=count + 1)
pool.parts_for(agents[0])  # import and build everything once, then measure
pool.invalidate(None)
before = process.memory_info().rss
for agent in agents:
    pool.parts_for(agent)
after = process.memory_info().rss
print(json.dumps({"agents": len(agents), "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20}))
