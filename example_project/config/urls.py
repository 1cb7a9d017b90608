from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
    # The admin's CSS and JS, served by Django itself while DEBUG is on
    # (runserver does that by itself; uvicorn does not). In production,
    # collectstatic and a web server or WhiteNoise.
    *staticfiles_urlpatterns(),
]
