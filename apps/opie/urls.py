from django.urls import path

from apps.opie.agentos import views

app_name = "opie"
urlpatterns = [
    path("", views.home, name="home"),
    path("agentos/", views.dashboard, name="dashboard"),
]
