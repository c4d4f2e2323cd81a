"""POST /reports starts a slow report and answers at once; GET /reports/<id> follows it through Django's API."""

import json

from django.http import Http404, HttpRequest, JsonResponse
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from chute.integrations.django import get_app

from .tasks import build_report


@csrf_exempt  # a JSON API for the example; keep CSRF protection for browser forms
@require_POST
def start_report(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    result = build_report.enqueue(int(body.get("rows", 10)), bool(body.get("fail", False)))
    return JsonResponse({"id": result.id, "status": "queued"}, status=202)  # sent when this request commits


@require_GET
def report_status(request: HttpRequest, report_id: str) -> JsonResponse:
    job = get_app().result(report_id)
    state = job.status  # chute's finer state (retrying, dead, ...), read first: Django's is never older
    try:
        result = build_report.get_result(report_id)  # Django's own API
    except TaskResultDoesNotExist:
        raise Http404("no such report") from None
    if result.is_finished and not state.finished:
        state = job.status  # it finished between the two reads
    out = {"id": result.id, "django_status": result.status, "status": state.value}
    if result.status == TaskResultStatus.SUCCESSFUL:
        out["result"] = result.return_value
    elif result.errors:
        out["error"] = result.errors[-1].traceback.strip().splitlines()[-1]
    return JsonResponse(out)
