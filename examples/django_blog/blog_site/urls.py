"""
URL configuration for blog_site project.

The `urlpatterns` list routes URLs to views. For more information please see:
    https://docs.djangoproject.com/en/5.2/topics/http/urls/
"""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve


def media(request, path):
    # Uploaded media is served by Django itself, also with DEBUG off. That is
    # fine for a small site; a busy one would let the web server do it.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("posts.urls")),
    re_path(r"^%s(?P<path>.*)$" % settings.MEDIA_URL.lstrip("/"), media, name="media"),
]
