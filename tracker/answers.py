"""The tracker's fixed answers (the pixel's GIF, the refusals of an acceptance the spool could
not take) and `Invalid`, the refusal of a request that becomes a 4xx with its reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from tracker.http import Response

GIF: Final = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE: Final = [("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")]
ERROR_HEADER: Final = "X-Adpulse-Error"
# Says that a click was taken as a bot's (counted apart, in no KPI); on an event post, how many.
BOT_HEADER: Final = "X-Adpulse-Bot"
JSON: Final = "application/json"
MAX_REJECTED_PAYLOAD: Final = 16 * 1024
RETRY_AFTER_SECONDS: Final = "5"
OVERLOADED_BODY: Final = (
    b'{"error":"overloaded","reason":"the spool cannot take more events now '
    b'(full, or its disk is); retry later"}'
)
# The pixel keeps its GIF when it cannot take the event, and says so in a header.
PIXEL_REFUSED: Final = Response(
    503,
    GIF,
    "image/gif",
    [*NO_STORE, ("Retry-After", RETRY_AFTER_SECONDS), (ERROR_HEADER, "overloaded")],
    constant=True,
)
PIXEL_OK: Final = Response(200, GIF, "image/gif", NO_STORE, constant=True, refusal=PIXEL_REFUSED)
PIXEL_BOT: Final = Response(
    200, GIF, "image/gif", [*NO_STORE, (BOT_HEADER, "1")], constant=True, refusal=PIXEL_REFUSED
)
# A HEAD records nothing, so it has no commit to wait for and nothing to refuse.
PIXEL_HEAD: Final = Response(200, GIF, "image/gif", NO_STORE, constant=True)
# Answered instead of an acceptance whose turn could not be written to the spool's log.
CLICK_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [*NO_STORE, ("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)
SPEND_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)
CALLS_REFUSED: Final = Response(
    503, OVERLOADED_BODY, JSON, [("Retry-After", RETRY_AFTER_SECONDS)], constant=True
)


class Invalid(Exception):
    """A request refused as invalid: becomes a 4xx with a JSON reason and a rejected record."""

    def __init__(
        self, field: str, reason: str, *, status: int = 400, index: int | None = None
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.index = index

    def body(self) -> bytes:
        document: dict[str, Any] = {
            "error": "invalid_request",
            "field": self.field,
            "reason": self.reason,
        }
        if self.index is not None:
            document["index"] = self.index
        return orjson.dumps(document)


def json_answer(status: int, document: Mapping[str, Any]) -> Response:
    return Response(status, orjson.dumps(document), JSON)
