from django.urls import path

from . import views

app_name = "posts"

urlpatterns = [
    path("", views.index, name="index"),
    path("posts.json", views.post_list_json, name="list-json"),
    path("posts", views.create_post, name="create"),
]
