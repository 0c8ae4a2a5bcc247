import io
import shutil
import tempfile

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase, override_settings
from PIL import Image

from .models import Post

MEDIA_ROOT = tempfile.mkdtemp()


def tiny_png():
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(buffer, format="PNG")
    return SimpleUploadedFile("dot.png", buffer.getvalue(), content_type="image/png")


@override_settings(
    MEDIA_ROOT=MEDIA_ROOT,
    STORAGES={
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    },
)
class PostViewsTests(TestCase):
    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(MEDIA_ROOT, ignore_errors=True)
        super().tearDownClass()

    def test_index_empty(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "No posts yet")

    def test_create_post_with_image(self):
        form = {"title": "Hello", "body": "First", "image": tiny_png()}
        response = self.client.post("/posts", form)
        self.assertEqual(response.status_code, 201)
        data = response.json()
        self.assertEqual(data["title"], "Hello")
        self.assertIn("/media/posts/", data["image_url"])

        media = self.client.get(data["image_url"].removeprefix("http://testserver"))
        self.assertEqual(media.status_code, 200)

        self.assertContains(self.client.get("/"), "Hello")
        self.assertEqual([p["title"] for p in self.client.get("/posts.json").json()], ["Hello"])

    def test_create_post_rejects_non_image(self):
        bogus = SimpleUploadedFile("x.png", b"not an image", content_type="image/png")
        response = self.client.post("/posts", {"title": "Bad", "image": bogus})
        self.assertEqual(response.status_code, 400)
        self.assertIn("image", response.json()["errors"])
        self.assertFalse(Post.objects.exists())

    def test_create_post_requires_title(self):
        response = self.client.post("/posts", {"body": "no title"})
        self.assertEqual(response.status_code, 400)
