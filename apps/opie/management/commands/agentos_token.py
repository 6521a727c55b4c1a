"""`manage.py agentos_token USERNAME [--create-user] [--staff]`: print a new API token."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (the raw token is the last line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if missing")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument("--name", default="cli", help="a label for the token")

    def handle(self, *args: Any, username: str, create_user: bool, staff: bool, name: str, **_: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user {username!r}; pass --create-user to create it")
            user = users.objects.create_user(username=username)
            self.stderr.write(f"created user {username}")
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        _, raw = api_token_create(user=user, name=name)
        self.stderr.write(f"token for {username} (shown once; store it now):")
        self.stdout.write(raw)
