"""`adpulse simulate`: realistic marketing traffic through the tracker's HTTP endpoints.

`profiles` (the channels), `plan` (the seeded actions, pure), `tally` (what was sent and
counted, pure), `driver` (aiohttp, sends the plan).
"""
