import asyncio
import os

from django.http import HttpResponse, JsonResponse

import profwatch
from common import Inflight, burn

inflight = Inflight()


def django_hot_items(ms):
    burn(ms)


def django_hot_orders(ms):
    burn(ms)


def django_async_hot(ms):
    burn(ms)


def _ms(request):
    return float(request.GET.get("ms", "0"))


def healthz(request):
    return HttpResponse("ok")


def items(request, pk):
    django_hot_items(_ms(request))
    return JsonResponse({"pk": pk, "pid": os.getpid()})


def orders(request, order_id):
    django_hot_orders(_ms(request))
    return JsonResponse({"order_id": order_id})


def legacy(request, year):
    return JsonResponse({"year": year})


async def async_items(request, pk):
    with inflight:
        steps = int(request.GET.get("steps", "4"))
        for _ in range(steps):
            django_async_hot(_ms(request) / steps)
            await asyncio.sleep(0.01)
    return JsonResponse({"pk": pk})


def stats(request):
    return JsonResponse({"max_inflight": inflight.max, "pid": os.getpid(), **profwatch.stats()})
