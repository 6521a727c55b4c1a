# Production image: web (gunicorn), workers, beat and Flower all run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    AGNO_TELEMETRY=false \
    OPIE_EMBEDDED=0

RUN apt-get update && apt-get install -y --no-install-recommends procps && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY . .
# static files are collected at build time; the dummy values exist only for this step
RUN DATABASE_URL=postgresql://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0

# var/metrics: the image's empty metrics directory, so the `metrics` volume mounted there is opie's
RUN useradd --create-home --uid 10001 opie && mkdir -p var/metrics && rm -f var/metrics/*.db && chown -R opie /app
USER opie
EXPOSE 8000
CMD ["gunicorn", "config.asgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "uvicorn_worker.UvicornWorker", \
     "--workers", "2", "--timeout", "120", "--keep-alive", "10", "--access-logfile", "-"]
