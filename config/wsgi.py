import os

import django
from django.core.handlers.wsgi import WSGIHandler

from apps.tracing import configure_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # what get_wsgi_application() does first
configure_tracing("opie-web")  # before the handler loads the middleware: Django's instrumentation adds one
application = WSGIHandler()
