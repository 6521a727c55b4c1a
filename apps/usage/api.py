"""GET /usage/: the caller's usage figures (staff: anyone's) as JSON or CSV."""
from __future__ import annotations

from typing import Any, Literal, Optional

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from apps.api.schemas import ErrorOut
from apps.common import DomainError, NotFound, agentos_enabled_check
from apps.usage.presenters import day_parse, usage_range, usage_rows_to_csv, usage_rows_to_json
from apps.usage.selectors import usage_report

router = Router(tags=["usage"])
DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # a UTC date, YYYY-MM-DD (pydantic would take `0` as 1970-01-01)
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 429, 503)}


class UsageOut(Schema):
    user: str
    group_by: str
    from_: str = Field(..., alias="from")
    to: str
    rows: list[dict[str, Any]]


def usage_subject(*, requester: Any, username: Optional[str]) -> Any:
    """Whose figures: the requester's own; staff may name anyone by username (403
    `staff_only` for anyone else, 404 `user_not_found` for no such user)."""
    if username is None:
        return requester
    if not requester.is_staff:
        raise DomainError("staff_only", "Only staff may read another user's usage.", status=403)
    subject = get_user_model().objects.filter(username=username).first()
    if subject is None:
        raise NotFound("user")
    return subject


@router.get("usage/", response={200: UsageOut, **ERRORS}, by_alias=True, summary="Usage figures",
            openapi_extra={"responses": {200: {"description": "OK", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/UsageOut"}},
                "text/csv": {"schema": {"type": "string"}}}}}})
def usage_get(request: HttpRequest, date_from: Optional[str] = Query(None, alias="from", pattern=DAY),
              date_to: Optional[str] = Query(None, alias="to", pattern=DAY),
              group_by: Literal["day", "agent", "model"] = "day",
              user: Optional[str] = Query(None, min_length=1, max_length=150),
              format: Literal["json", "csv"] = "json") -> Any:
    """Your runs, model calls, tool calls, tokens, run time and estimated cost over
    the UTC days `from`..`to` (inclusive; default the last 30 days), one row per
    `day`, `agent` (its public id) or `model` (provider and id). Staff may pass
    `user=<username>`. `format=csv` answers the same rows as `text/csv`."""
    agentos_enabled_check()
    subject = usage_subject(requester=request.auth, username=user)  # type: ignore[attr-defined]
    start, end = usage_range(day_parse(date_from, "from"), day_parse(date_to, "to"), today=timezone.now().date())
    rows = usage_report(user_id=subject.pk, date_from=start, date_to=end, group_by=group_by)
    if format == "csv":
        response = HttpResponse(usage_rows_to_csv(rows, group_by), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{group_by}-{start}-{end}.csv"'
        return response
    return {"user": subject.get_username(), "group_by": group_by, "from": start.isoformat(), "to": end.isoformat(),
            "rows": usage_rows_to_json(rows, group_by)}
