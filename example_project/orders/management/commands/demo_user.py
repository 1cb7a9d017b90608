"""Create (or reset) the demo superuser admin/admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo superuser admin (password admin)."

    def handle(self, *args: Any, **options: Any) -> None:
        user, _ = User.objects.get_or_create(username="admin")
        user.is_staff = user.is_superuser = True
        user.set_password("admin")
        user.save()
        self.stdout.write("Demo superuser: admin / admin")
