from django.urls import include, path, re_path

from . import views

urlpatterns = [
    path("healthz", views.healthz),
    path("items/<int:pk>/", views.items),
    path("api/v1/", include([path("orders/<int:order_id>/", views.orders)])),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", views.legacy),
    path("async/<int:pk>/", views.async_items),
    path("stats/", views.stats),
]
