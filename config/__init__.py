"""Settings by concern, URLs, the ASGI application and the embedded servers.

The Celery app is loaded with this package, as cookiecutter-django does, so it is
Celery's current app in every Django process (web, `manage.py`, tests) from the
moment settings load.
"""
from celery_app import app as celery_app

__all__ = ("celery_app",)
