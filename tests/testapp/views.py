from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from tests.testapp.models import Item, Order


@csrf_exempt
def create_order(request: HttpRequest) -> HttpResponse:
    """Saves an Order; with ?fail=1 raises afterwards, so ATOMIC_REQUESTS rolls back."""
    order = Order.objects.create(status=request.POST["status"])
    if request.GET.get("fail"):
        raise RuntimeError("after the save")
    return HttpResponse(str(order.pk), status=201)


@csrf_exempt
def sell_items(request: HttpRequest) -> HttpResponse:
    """Marks every item sold, in one UPDATE (no signals: publish_changes sees it)."""
    return HttpResponse(str(Item.objects.update(status="sold")))
