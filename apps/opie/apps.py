from django.apps import AppConfig


class Config(AppConfig):
    name = "apps.opie"
    label = "opie"
    verbose_name = "Opie AgentOS"
    default_auto_field = "django.db.models.BigAutoField"
