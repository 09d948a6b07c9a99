"""The tracker's root page: a few lines for a person who opens the tracker in a browser.

Built once at start-up from the settings; no client input ever appears in it.
"""

from __future__ import annotations

from html import escape

from tracker.settings import TrackerSettings

HTML = "text/html; charset=utf-8"


def home_page(settings: TrackerSettings) -> bytes:
    hosts = ", ".join(sorted(settings.redirect_policy.hosts)) or "none (ADPULSE_REDIRECT_HOSTS)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adpulse tracker</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:2em auto;padding:0 1em}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body>
<h1>adpulse tracker</h1>
<p>This is the tracking endpoint of adpulse: websites, shops and ad accounts send clicks,
conversions, coupon redemptions and spend here; they go to Kafka (topic
<code>{escape(settings.topic)}</code>) and become live per-channel KPIs.</p>
<ul>
<li><a href="/openapi.json">/openapi.json</a>: every endpoint and field (open it in an OpenAPI
viewer, or your browser's JSON view)</li>
<li><a href="/metrics">/metrics</a>: the tracker's own Prometheus metrics</li>
<li><a href="/readyz">/readyz</a>: broker and spool state; <a href="/healthz">/healthz</a></li>
<li>a tracking pixel: <code>&lt;img src="/p.gif?type=click&amp;channel=email"&gt;</code></li>
<li>a tracked link: <code>/c?to=https://shop.example.com/&amp;channel=email</code>;
redirects may go to: {escape(hosts)}</li>
<li>conversions and redemptions: <code>POST /v1/events</code>;
spend: <code>POST /v1/spend</code> with a bearer token</li>
</ul>
</body></html>
""".encode()
