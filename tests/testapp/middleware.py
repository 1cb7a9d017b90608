"""The README's middleware: the user behind every change of a request."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from django_pgpubsub import publish_context


def publish_user(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        with publish_context(user=request.user.pk):
            return get_response(request)

    return middleware
