from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from django_pgpubsub import notify
from django_pgpubsub.views import EventStreamView
from orders.models import Activity, Order


def latest_orders() -> dict[str, object]:
    return {"orders": Order.objects.order_by("-id")[:20]}


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/index.html", latest_orders())


def order_list(request: HttpRequest) -> HttpResponse:
    """The Orders list alone: the page fetches it again when an order changes."""
    return render(request, "orders/_orders.html", latest_orders())


@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    customer = request.POST.get("customer", "").strip() or "anonymous"
    with transaction.atomic():
        order = Order.objects.create(
            customer=customer,
            item=request.POST.get("item", "").strip() or "Widget",
            quantity=max(1, int(request.POST.get("quantity") or 1)),
        )
        # Sent in this transaction: delivered at commit, together with the
        # model event, and never if anything above fails.
        notify("audit", {"user": customer, "order": order.pk})
        # Durable: stored in the same transaction and handled even if no
        # listener is running right now (try it: stop listen_events first).
        notify("mail.confirmation", {"order": order.pk, "to": customer}, durable=True)
    return redirect("index")


@require_POST
def ship(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(Order, pk=pk)
    order.status = "shipped"
    order.save()
    return redirect("index")


@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    get_object_or_404(Order, pk=pk).delete()
    return redirect("index")


def activity(request: HttpRequest) -> JsonResponse:
    """The handlers' latest work: the page loads it once, and again on a resync."""
    rows = Activity.objects.all()[:30]
    return JsonResponse(
        {
            "activity": [
                {"channel": a.channel, "message": a.message, "at": a.created_at} for a in rows
            ]
        }
    )


class ShopStream(EventStreamView):
    """New activity rows and changed orders, as Server-Sent Events, to every open page."""

    channels = ("orders.activity", "orders.order")
