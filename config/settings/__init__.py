"""Settings, split by concern; every value comes from the environment."""
from config.settings.agentos import *  # noqa: F401,F403
from config.settings.base import *  # noqa: F401,F403
from config.settings.celery import *  # noqa: F401,F403
from config.settings.metrics import *  # noqa: F401,F403
from config.settings.services import *  # noqa: F401,F403
