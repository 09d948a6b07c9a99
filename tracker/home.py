"""The tracker's root page: a few lines for a person who opens the tracker in a browser.

Built once at start-up from the settings and the OpenAPI document (so the endpoint list is the
one the tracker serves); no client input ever appears in it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from tracker.openapi import openapi_document
from tracker.settings import TrackerSettings

HTML = "text/html; charset=utf-8"


def home_page(settings: TrackerSettings) -> bytes:
    hosts = ", ".join(sorted(settings.redirect_policy.hosts)) or "none (ADPULSE_REDIRECT_HOSTS)"
    document: dict[str, Any] = openapi_document(settings)
    rows = "\n".join(
        f"<tr><td><code>{escape(method.upper())}</code></td>"
        f"<td><code>{_linked(path, method)}</code></td>"
        f"<td>{escape(str(operation.get('summary', '')))}</td></tr>"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adpulse tracker</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:50em;margin:2em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:0 .2em}}td{{padding:.1em .6em .1em 0;vertical-align:top}}
</style></head>
<body>
<h1>adpulse tracker</h1>
<p>This is the tracking endpoint of adpulse: websites, shops and ad accounts send clicks,
conversions, coupon redemptions and spend here; they go to Kafka (topic
<code>{escape(settings.topic)}</code>) and become live per-channel KPIs. Every endpoint and
field is described in <a href="/openapi.json">/openapi.json</a> (OpenAPI 3); its own metrics are
on <a href="/metrics">/metrics</a>.</p>
<table>
{rows}
</table>
<p>A pixel: <code>&lt;img src="/p.gif?type=click&amp;amp;channel=email"&gt;</code>.
Click redirects may go to: {escape(hosts)}, and with ADPULSE_REDIRECT_SECRET set, to any
host with a signed link.
Spend needs <code>Authorization: Bearer $ADPULSE_API_TOKEN</code>.</p>
</body></html>
""".encode()


def _linked(path: str, method: str) -> str:
    # Only the pages a browser can open as they are get a link.
    if method == "get" and path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        return f'<a href="{escape(path)}">{escape(path)}</a>'
    return escape(path)
