"""Django settings for the end-to-end tests; profwatch configures itself from PROFWATCH_*."""

SECRET_KEY = "profwatch-e2e-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djsite.urls"
INSTALLED_APPS = []
DATABASES = {}
MIDDLEWARE = [
    "profwatch.django.Middleware",
    "django.middleware.common.CommonMiddleware",
]
USE_TZ = True
