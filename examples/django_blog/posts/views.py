from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .forms import PostForm
from .models import Post


def post_to_dict(request, post):
    return {
        "id": post.id,
        "title": post.title,
        "body": post.body,
        "image_url": request.build_absolute_uri(post.image.url) if post.image else None,
        "created": post.created.isoformat(),
    }


@require_GET
def index(request):
    return render(request, "posts/index.html", {"posts": Post.objects.all()})


@require_GET
def post_list_json(request):
    posts = [post_to_dict(request, post) for post in Post.objects.all()]
    return JsonResponse(posts, safe=False)


@csrf_exempt
@require_POST
def create_post(request):
    """Create a post from a multipart form: title, body and an optional image."""
    form = PostForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    post = form.save()
    return JsonResponse(post_to_dict(request, post), status=201)
