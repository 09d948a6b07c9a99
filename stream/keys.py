"""Every Redis key the stream package uses, and how long each lives.

One `KeySpace` per deployment (a prefix; tests use a unique one each). Layout, with the
default prefix ``adpulse:``:

==========================  =======  ==============================================  ==========
key                         type     content                                         expires
==========================  =======  ==============================================  ==========
``adpulse:m:{minute}``      hash     ``{channel}:{counter}`` -> int, one minute       minute
                                     (`minute` = Unix seconds // 60)                  retention
``adpulse:h:{hour}``        hash     the same per hour (Unix seconds // 3600)         hour
                                                                                      retention
``adpulse:t``               hash     the same, lifetime totals                        never
``adpulse:d:{day}``         hash     the same per local day (`day` = YYYYMMDD in the  day
                                     reporting time zone, see `stream.days`)          retention
``adpulse:mo:{month}``      hash     the same per local month (YYYYMM): the sum of     day
                                     its days, written from the same sums             retention
``adpulse:dc:{day}``        hash     ``{channel}\\t{campaign}:{counter}`` -> int      day
                                     per local day                                    retention
``adpulse:mc:{month}``      hash     the same per local month                         day
                                                                                      retention
``adpulse:cs:{month}:{ch}`` set      the campaigns of channel `ch` counted under their day
                                     own name in `month` (see below)                  retention
``adpulse:hist:{day}``      hash     ``{channel}\\t{campaign}`` -> the figures a      day
                                     history import put into that day, and the row    retention
                                     they count under (the caps may have moved it)
``adpulse:ci:{src}:{day}``  hash     spend id -> ``{channel}\\t{campaign}`` of a cost  day
                                     import of source `src` on that day               retention
``adpulse:stats``           hash     ``applied``, ``duplicates``, ``late`` counts      never
                                     (and ``redelivered``, ``restated`` ...)
``adpulse:offsets``         hash     ``{topic}:{partition}`` -> ``{offset}:{event id   never
                                     fingerprint}`` of the last row applied (below)
``adpulse:ids:{gen}:{b}``   set      fingerprints of the event ids applied in         see below
                                     generation `gen`, bucket `b` (an intset)
``adpulse:ids:{gen}:m``     hash     the generation's layout: ``n`` buckets, split    see below
                                     pointer ``s``, ``c`` ids, ``x`` buckets that
                                     lacked a key when split (see below)
``adpulse:ord:{gen}:{b}``   hash     order fingerprint -> its state (`stream.orders`)  see below
                                     as one integer: status, minute, value and a
                                     reference (`stream.states`; a listpack)
``adpulse:ord:{gen}:names`` hash     reference -> ``{LTV share}\\t{channel}\\t``      see below
                                     ``{campaign}`` (and the text form's, see
                                     `stream.states`); ``:refs`` the reverse
``adpulse:cust:{gen}:{b}``  hash     customer hash fingerprint -> its state as one    see below
                                     integer: first minute and a reference to
                                     ``{channel}\\t{cohort month YYYYMM}``;
                                     ``:names``/``:refs`` as for orders
``adpulse:ltv:{month}``     hash     ``{channel}:u`` customers acquired in the        day
                                     cohort month, ``{channel}:{30,90,365}`` their    retention
                                     net revenue (micros) within so many days
``adpulse:leads:{gen}:{b}`` set      lead id fingerprints (order window)              see below
``adpulse:clicks:{gen}:{b}`` hash    click id fingerprint -> ``{ref}{minute}``        see below
                                     (see "Remembered ids"; the click's minute, see
                                     "Delays"); ``:names``/``:refs`` as for orders
``adpulse:callers:{gen}:{b}`` set    caller hash fingerprints whose call counted as   see below
                                     a lead; leads and callers have layouts like ids
``adpulse:s:{event_id}``    string   a spend record, see `aggregate.SpendRecord`      spend TTL
``adpulse:coupons``         hash     coupon code -> channel                           never
``adpulse:channels``        set      every channel counted (but the fixed buckets)    never
``adpulse:outbox``          hash     cluster mode, per part: customer part -> number  never
                                     of its last fact (see "Customers across parts")
``adpulse:outbox:{n}``      list     cluster mode: facts for customer part `n` not    when sent
                                     yet confirmed by it
==========================  =======  ==============================================  ==========

Counters (the part after the channel's ":"): ``k`` clicks, ``r`` redemptions, ``c``
conversions, ``v`` revenue (micros), ``s`` spend (micros); orders (`stream.orders`): ``c`` and
``v`` are net (pending and approved orders at their current value), ``g``/``G`` gross
conversions and revenue as first reported, ``e``/``E`` pending, ``d``/``D`` declined,
``f``/``F`` refunded (count, micros), and at the moment of a restatement ``n`` restatements
and ``N`` the change of net revenue (micros, may be negative); customers
(`stream.customers`): ``u`` new customers, ``y`` repeat sales and ``Y`` their revenue (micros);
``p`` calls, ``a`` answered calls, ``l`` leads (a form, or a qualified call: its caller is
remembered like an event id, so the same caller within the dedupe window is one lead), ``b`` bot
clicks (clicks the edge flagged as a bot's: counted apart, never in
``k``, so no KPI reads them). Bucket keys expire at the end of their bucket plus the retention
(EXPIREAT, so a late write never extends a bucket's life), which bounds memory by channels x
buckets.

Delays (issue 15): a conversion attributed through its click id also counts ``t{bin}`` (``t0``
.. ``t10``, the bins of `stream.lag.DELAY_EDGE_MINUTES`) for its channel in the minute and hour
buckets *of its click* and in the totals, not in the day buckets: a bucket's ``t`` fields are the
conversions of that bucket's clicks by click-to-conversion delay, the cohorts `stream.lag` learns
the delay from. The click registry keeps the click's minute for it.

Channels are bounded too: the script counts an event under its channel only if the channel is
in ``adpulse:channels`` or the set has room (fewer than the worker's ``max_channels``, default
`DEFAULT_MAX_CHANNELS`); any other channel is counted under ``unlisted`` and in the stats'
``unlisted``. Coupon channels registered by an operator join the set whatever its size.
``unattributed`` and ``unlisted`` are not in the set. So the counters hold at most
(max_channels + 2) x (len(COUNTER_FIELDS) + 11 delay bins) fields per bucket, whatever the
clients send.

Campaigns are bounded per channel and month: an event's campaign is counted under its own name
in the day and month buckets while ``cs:{month}:{channel}`` knows it or has room (fewer than
the worker's ``max_campaigns``, default `DEFAULT_MAX_CAMPAIGNS`); any other under ``other``,
counted in the stats' ``other_campaigns``. "" (no campaign) and ``other`` are never in the set.
So a day bucket holds at most (max_channels + 2) x (max_campaigns + 2) x 7 campaign fields,
and a new month gives new campaigns room again. A channel's figures in ``d``/``mo`` are the
sums of its campaigns' in ``dc``/``mc``.

Ids are remembered for their window (`Retention.dedupe`, `.order`, `.attribution`) in
generations: generation ``gen`` holds the ids written between ``gen * period`` and
``(gen + 1) * period`` Unix seconds, where the period is a quarter of the window (rounded up).
A look-up reads the generations that may hold an id written within the window (five, at
most six), so an id is remembered for at least its window and at most a period longer. The
script unlinks the generation before those (its memory is freed off Redis's main thread) and
each generation expires one period after that as a backstop.

Remembered ids (issue 16). Every id above is kept as its 64-bit fingerprint
(`stream.fingerprints`: BLAKE2b, 8 bytes, personalised per kind of id, a signed integer in
decimal), so Redis stores it as an integer: 8 bytes in an intset, 9 in a listpack. A false
match (an id taken for another with the same fingerprint) has probability about n / 2^64 per
look-up with n ids of that kind in the window: at the README's volumes (1,000 events/s, 800 of
them clicks, 200 conversions) 86.4 million event ids in 24 hours give 5e-12 per event (one
event wrongly taken for a duplicate about every 7 years at that rate; a quarter more while the
oldest generation ages out), 2.1 billion click ids in 30 days 1e-10 per conversion, 1.6 billion
order ids in 90 days 8e-11 per conversion.

A generation is a linear hash of buckets, ``{kind}:{gen}:{b}``, each a set (or a hash for ids
with a value) that Redis keeps in its compact encoding while it holds at most
``set-max-intset-entries`` (default 512) integers, or ``hash-max-listpack-entries`` (default
512) fields: a generation starts with one bucket, and whenever it holds more than its load
(`IdLayout`: 40 % of that limit, for hashes at most 64) per bucket, its next bucket is split in
two, so buckets stay small at every volume with no setting to get right. The worker reads both
limits at start (CONFIG GET; a Redis that refuses CONFIG is assumed to have the defaults) and
warns, naming the setting, when one is below the default: buckets are then sized for it, and
more memory goes to each bucket's own overhead. A bucket beyond the limit is still correct,
only bigger. Its layout is ``{kind}:{gen}:m`` (``n`` buckets, split pointer ``s``, ``c`` ids;
``x`` is 1, which tells an older script, one without the expiry bits below, to set the expiry on
every write; a layout an older script wrote last, x not 1, has its bits dropped, since its
splits leave an emptied bucket's bit set). A generation's first write lays it out for as many
ids as the generation before it held (its ``c``), so that in a steady flow it fills without a
split (a split reads a bucket back and moves half of it; growing from one bucket moved every id
about twice): its buckets are then
created by the writes that first reach them, each with the generation's expiry, and
``{kind}:{gen}:e`` (a bit per bucket, seven to an ASCII byte) says which have it; a split that
empties a bucket (a key Redis removes) clears its bit. A generation laid out for more ids than
it gets costs nothing for the buckets never written (no key) and some bucket overhead per id for
the others (the buckets of a generation a tenth of the one before hold a tenth as many ids
each). The price of small buckets is more Redis commands per batch: one look-up per distinct
bucket and generation (`stream.lua`).

Values: a click's is ``{ref}{minute - origin, 6 digits}`` (an integer below 2^31 while the
generation has at most 2,146 (channel, campaign) references: 6 bytes in a listpack), the
origin 600,000 minutes before the generation's start; a click minute outside that million is
kept whole as ``-{ref}{minute, 10 digits}``. References are numbers 1, 2, ... of the
generation's dictionary ``{kind}:{gen}:names``. An order's and a customer's state is one
integer too (`stream.states`): a listpack keeps an order's in 10 bytes (a value in whole cents
up to about $100,000; in other micros up to about $1,000 while its generation has fewer than
1,024 (LTV share, channel, campaign) references) and a customer's in 6, so a remembered order
takes about 24 bytes and a customer 18 (`tests/integration/test_id_memory.py`); a state that
does not fit is kept as text.

An old deployment's generations (``ids:{gen}`` and the others, whole keys of raw ids) are not
read after the upgrade and expire on their own (README, "Upgrading").

Redelivery (issue 16). Kafka delivers records again after a worker crash or a rebalance (from
the group's committed offset, which lags what was applied). The worker tells the script each
row's partition and offset (`batch.DecodedBatch.sources`); the script keeps in ``offsets`` the
offset and event id of the last row it applied per partition, written with the counters in the
same script call, and skips a row at or below that offset, counted as ``redelivered`` (stats
hash, `BatchResult`, the worker's ``adpulse_worker_redelivered_events_total``), without a
look-up of its event id. A Kafka log can start again: Tansu restarted empty (the dev stack's
broker recycling replaces it routinely) numbers its records from 0 again. So a row is skipped
only when the batch shows the same log: its row at the stored offset carries the stored event
id. A new log's row there is another event (then the stored offset moves to the new log's) or
is not in the batch (then nothing is skipped and nothing moves, until a batch reaches it), so
none of its records is taken for a redelivery. The worker names each partition with its
broker's cluster id (`batch_loop.BatchLoop`), which the script stores with the offset: a row of
another log is never skipped, so two workers on two brokers (the dev stack's blue/green
replacement) may interleave batches of one partition. A part of a batch with spend records
carries no offsets (which records became rows is not known then); its redeliveries, and client
re-sends, are still caught by the event-id window, which stays.

Redis Cluster (issue 16, `stream.cluster`). In Redis Cluster a script may touch only keys of
one hash slot, and the script builds its key names from the prefix. So in cluster mode
(``ADPULSE_REDIS_URL=redis+cluster://host:port``) a key space is cut into `CLUSTER_PARTS` parts,
each a key space of its own whose prefix carries a hash tag, ``adpulse:{c3.0}:`` (`part`): every
key above exists once per part, all of a part's keys are in one slot, and one script call per
part of a batch writes them. The call names one key of its part (``stats``) so that the client
routes it to the part's master; the script builds the others from the part's prefix, all in
that slot (Redis refuses a script's access to a key another master serves). The tags are chosen
so that their slots lie in 16 equal slot ranges (`CLUSTER_TAGS`): however a cluster of up to 16
masters divides the slots into ranges, the parts spread evenly over its masters.

Resharding. DESIGN.md's pitfall says a script names every key it touches in KEYS; cluster mode
departs from it because a batch's keys (buckets, remembered ids, outboxes) are known only inside
the script. Naming one key of the part routes the call to the part's slot, and every other key
shares that slot through the hash tag, so the call is correct as long as the slot does not move.
While a slot migrates (MIGRATING/IMPORTING), a key the script builds but does not declare may
already sit on the target: Redis answers ASK/MOVED or a cross-slot error for the whole call,
which the store reports as unavailable (`KpiStore._apply_once`) and the worker retries, but
cannot redirect. So resharding while workers run is not supported: stop the workers, move the
slots (``redis-cli --cluster reshard``), start them again. Failover of a master to its replica
(the slots stay) needs no stop.

A row goes to a part by its routing key (`stream.cluster.row_key`): the same id the tracker keys
its Kafka record by (`adpulse.core.event.partition_key`): a call's caller, else the click id,
else a conversion's order id, else the lead id, else the event id; a spend record by its event
id. Partition-local state stays whole that way: a client's re-send (the same event), a click and
the conversions naming it (the click registry), an order and its restatements that name the
same click id (or, without a click id, the same order id), a lead id, a caller. Routing by key,
not by Kafka partition, keeps the parts independent of the topic's partition count and lets a
spend record (whose partition the store is not told) and a rebuild route the same way. The
applied offsets (below, "Redelivery") are kept per part and partition: a part's rows of one
partition are ascending in offset, and a redelivered batch sends the same rows to the same part,
so it is skipped there as in one instance. A new log (a broker restarted empty) is recognised in
a part only once its rows there pass the offset the part applied last (the row at that offset is
another part's in the new log); until then its records are neither skipped nor move the offset,
and a re-read of them is caught by the event-id window, counted as a duplicate.

Customers across parts (`stream.cluster`, `KpiStore._forward_customers`). A customer's
conversions route by their click or order ids, so they land in different parts, while the
customer's state (new or repeat, acquisition channel, cohort) must be one. So a customer lives
in one part of its own, its customer part (the SHA1 of its fingerprint, its first 32 bits
scaled to `CLUSTER_PARTS`, which `lua.fill_marks` writes into the script: the first hex digit),
and a batch takes two script calls, in two slots, kept exactly-once as follows:

1. The row's part applies the row as one instance does, except what reads or writes the
   customer: the state, ``u``, ``y``/``Y`` and the ``ltv`` cohorts. Instead, in the same script
   call as its counters (so atomically), it appends the customer fact of each conversion it
   applied to its outbox for the customer part, ``outbox:{n}``, numbered 1, 2, ... per (part,
   customer part) in ``outbox``: the customer fingerprint, the conversion's channel and campaign
   (as this part admitted them), minute, status and value, and for ordering the batch's stamp
   (`KpiStore._next_stamp`, increasing within a worker) and the row's index in the whole batch.
   A conversion's order remembers its customer (``={fingerprint}`` where one instance keeps the
   LTV share), so a restatement, in the order's part, appends a fact of kind ``x``: the change of
   net value at the order's minute, which the customer part credits to the LTV share one
   instance would have (the same cohort, horizon and acquisition channel, computed from the
   customer's state, which never changes once written).
2. The worker, once every part of the batch answered (and the batch before's second calls are
   done), sends the facts to their customer parts, one call per customer part, in the order
   (stamp, row index): the order one instance applies them in, so a customer's first conversion
   is the same one. The customer part applies a fact only if its number is the next after the
   last it applied from that source part (``offsets``, field ``outbox:{part}``, written in the
   same call as the customer's counters): a fact at or below it was applied (a replay: skipped),
   one past a gap waits. Then the worker trims each source outbox up to the number its customer
   part confirmed (`stream.cluster.TRIM_OUTBOX`); a fact is removed only once applied.

A crash between the calls leaves the facts in the outbox; a crash after call 2 and before the trim
leaves applied facts there, which a replay skips. So a worker sends every part's outbox again (all
256 lists, in (stamp, row) order) before its first batch's facts, after any failed call of either
kind, when a customer part reports a gap (another worker's facts not sent yet), and before its next
batch's own facts after Kafka assigned it partitions (`KpiStore.partitions_moved`): their last owner
may have died between a batch's two calls, and its stranded facts (older stamps) must be applied
before a later sale of the same customer in another part, or that sale would acquire the customer.
The batch's second calls send every outbox in one (stamp, row) order, which puts the stranded facts
first; one set of second calls runs at a time, in batch order. While facts may be left and no batch
comes, the outboxes are sent again every `store.RESEND_SECONDS`, until no fact waits. A redelivered
batch applies nothing in its parts (offsets, event ids), so it appends no fact twice. Two workers
during a rebalance both send facts; the numbers make either order apply each fact once, and the
first conversion is the one of the earlier stamp, an order one instance could have seen too.
Single-instance mode has no outbox: the script counts customers as before (its arguments stop at the
sources). Costs: a second call per batch with customers (in parallel over the customer parts), and
in order state the customer's fingerprint as a dictionary entry per customer and order generation
where one instance shares one per (cohort, horizon, channel).

What cluster mode does not keep (README, "Redis Cluster"): an order restated without the click
id its first report named is another part's and counts as a new order; the channel set and the
campaign sets are per part, so up to `CLUSTER_PARTS` x the caps are counted under their own
names; the coupon registry is one hash (``coupons``) that the worker
copies into a part (the codes of a batch, HMGET then HSET/HDEL there) before each script call
that reads it, and the channels a registration admits whatever the set's size join only the
registry's set, not the parts'. Readers sum a bucket over the parts (every bucket field is a
count or a sum); a cluster snapshot is read per master, not in one MULTI/EXEC. A rebuild
replays into a fresh prefix's parts (`stream.rebuild`). A snapshot file (`adpulse snapshot`,
`stream.snapshot`, "Redis Cluster") keeps each part's keys under their tagged names, read
with writes paused on the masters, a part in one MULTI/EXEC on its master, and restores them
to their parts; a
one-instance snapshot restores into a cluster with its counters in part 0, its customers in
their customer parts and its remembered ids, orders, clicks, channel and campaign sets and
applied offsets in every part.

Imports on a cluster: a history row's buckets and its ``hist:{day}`` record are its channel's
part's (`stream.imports.history_part`: a re-import finds the record there, and the channel's
campaign set of the month is one set, as on one instance); a cost row is a spend record in its
id's part, written by the worker's per-part script call (`KpiStore.apply_spend`); the
``ci:{src}:{day}`` records stay outside the parts, one key (and slot) each, read and written
whole. The tracked numbers are no part of this key space (`adpulse.core.phone`): on a cluster
their keys share one hash tag of their own.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

COUNTER_FIELDS: Final = ("k", "r", "c", "v", "s", *"gGeEdDfFnN", *"uyY", "l", "b", "p", "a")
CLICKS: Final = "k"
REDEMPTIONS: Final = "r"
CONVERSIONS: Final = "c"
REVENUE: Final = "v"
SPEND: Final = "s"
# Issue 12, the funnel: leads (forms, sign-ups, qualified calls), and the clicks taken as a
# bot's; issue 14: calls to tracked numbers, every call and the answered ones.
LEADS: Final = "l"
BOT_CLICKS: Final = "b"
CALLS: Final = "p"
ANSWERED: Final = "a"
DELAY: Final = "t"
"""Prefix of the delay-bin counters, ``t{bin}`` (see above); not in COUNTER_FIELDS, which are
the fields every event kind may count."""

# Channels the worker counts under their own name; beyond, under "unlisted" (see above).
DEFAULT_MAX_CHANNELS: Final = 200
# Campaigns of a channel and month counted under their own name; beyond, under "other".
DEFAULT_MAX_CAMPAIGNS: Final = 50
OTHER_CAMPAIGN: Final = "other"

MINUTE_SECONDS: Final = 60
HOUR_SECONDS: Final = 3600
DAY_RETENTION: Final = timedelta(days=3 * 366 + 62)
"""Day and month buckets: three years back from any day of this year, and a margin."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of key lives.

    `minute` defaults to 8 days and an hour, so a 24h window seven days back is still read at
    minute resolution (the issue asks for at least 48 hours; at 48 hours the week-earlier
    windows are read from hourly buckets, whole hours). Remembered event ids cost Redis memory
    for every event within `dedupe` (bench/README.md, "Contract", has the figure): the memory
    that bounds how late a duplicate may arrive.
    """

    minute: timedelta = timedelta(days=8, hours=1)
    hour: timedelta = timedelta(days=36)
    dedupe: timedelta = timedelta(hours=24)
    order: timedelta = timedelta(days=90)
    # Customers: a year of lifetime value after the acquisition, and a margin.
    customer: timedelta = timedelta(days=400)
    attribution: timedelta = timedelta(days=30)
    spend_record: timedelta = timedelta(days=400)
    day: timedelta = DAY_RETENTION

    def __post_init__(self) -> None:
        names = ("minute", "hour", "dedupe", "order", "attribution", "spend_record", "day")
        for name in (*names, "customer"):
            period: timedelta = getattr(self, name)
            if period.total_seconds() < 1 or period.total_seconds() % 1:
                raise ValueError(f"{name} retention must be a positive whole number of seconds")
        if self.minute < timedelta(hours=48):
            raise ValueError("minute retention must be at least 48 hours")
        if self.hour < timedelta(days=35) or self.hour < self.minute:
            raise ValueError("hour retention must be at least 35 days and the minute retention")
        if self.spend_record < self.hour:
            raise ValueError("spend records must live at least as long as hourly buckets")
        if self.day < timedelta(days=3 * 366):
            raise ValueError("day retention must be at least three years")

    @property
    def minute_seconds(self) -> int:
        return int(self.minute.total_seconds())

    @property
    def hour_seconds(self) -> int:
        return int(self.hour.total_seconds())

    def oldest_minute(self, now_seconds: int) -> int:
        """The oldest minute bucket still kept at `now_seconds`: (minute + 1) * 60 + ret > now."""
        return (now_seconds - self.minute_seconds) // MINUTE_SECONDS

    def oldest_hour(self, now_seconds: int) -> int:
        return (now_seconds - self.hour_seconds) // HOUR_SECONDS

    @property
    def day_seconds(self) -> int:
        return int(self.day.total_seconds())


INTSET_ENTRIES: Final = 512
"""Redis's default ``set-max-intset-entries``: a set of at most so many integers is an intset."""
LISTPACK_ENTRIES: Final = 512
"""Redis's default ``hash-max-listpack-entries``: a hash of at most so many fields (each at most
``hash-max-listpack-value`` bytes) is a listpack."""
LOAD_SHARE: Final = 0.4
"""Ids per set bucket aimed at, as a share of the compact encoding's limit: with linear hashing
a bucket not yet split holds up to twice the load, and a bucket varies around its mean."""
HASH_LOAD_MAX: Final = 64
"""Ids per hash bucket aimed at, at most: a listpack is searched field by field, so its buckets
are kept shorter than an intset's (searched by halves); about 2 bytes of key overhead an id."""


@dataclass(frozen=True, slots=True)
class IdLayout:
    """How many ids a bucket of remembered ids holds on average before the generation grows
    (see "Remembered ids" above): a share of Redis's limits for its compact encodings, which
    the worker reads at start (`for_limits`)."""

    set_load: int = int(INTSET_ENTRIES * LOAD_SHARE)
    hash_load: int = min(HASH_LOAD_MAX, int(LISTPACK_ENTRIES * LOAD_SHARE))

    def __post_init__(self) -> None:
        if self.set_load < 1 or self.hash_load < 1:
            raise ValueError("bucket loads must be at least 1")

    @classmethod
    def for_limits(cls, intset_entries: int, listpack_entries: int) -> IdLayout:
        """The layout for a Redis whose set-max-intset-entries and hash-max-listpack-entries
        are these."""
        return cls(
            max(1, int(intset_entries * LOAD_SHARE)),
            max(1, min(HASH_LOAD_MAX, int(listpack_entries * LOAD_SHARE))),
        )


DEFAULT_LAYOUT: Final = IdLayout()


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key names under one prefix; ``KeySpace("adpulse:")`` in production."""

    prefix: str = "adpulse:"

    def __post_init__(self) -> None:
        if not self.prefix or any(char.isspace() for char in self.prefix):
            raise ValueError("key prefix must be non-empty and without whitespace")

    def minute(self, minute: int) -> str:
        return f"{self.prefix}m:{minute}"

    def hour(self, hour: int) -> str:
        return f"{self.prefix}h:{hour}"

    @property
    def totals(self) -> str:
        return f"{self.prefix}t"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def coupons(self) -> str:
        return f"{self.prefix}coupons"

    @property
    def channels(self) -> str:
        return f"{self.prefix}channels"

    def day(self, day: int) -> str:
        """A local day's per-channel bucket; `day` is YYYYMMDD (see `stream.days`)."""
        return f"{self.prefix}d:{day}"

    def month(self, month: int) -> str:
        """A local month's per-channel bucket; `month` is YYYYMM."""
        return f"{self.prefix}mo:{month}"

    def day_campaigns(self, day: int) -> str:
        return f"{self.prefix}dc:{day}"

    def month_campaigns(self, month: int) -> str:
        return f"{self.prefix}mc:{month}"

    def campaign_set(self, month: int, channel: str) -> str:
        return f"{self.prefix}cs:{month}:{channel}"

    def history(self, day: int) -> str:
        return f"{self.prefix}hist:{day}"

    def cost_import(self, source: str, day: int) -> str:
        """The spend ids (-> channel and campaign) a cost import of `source` put on `day`."""
        return f"{self.prefix}ci:{source}:{day}"

    def lifetime_value(self, month: int) -> str:
        """A cohort month's customers and their net revenue by horizon (`stream.customers`)."""
        return f"{self.prefix}ltv:{month}"

    def generation(self, kind: str, number: int) -> str:
        """The set of one generation of "ids", "leads" or "callers"; the hash of "ord" (orders)
        or "clicks"."""
        return f"{self.prefix}{kind}:{number}"

    def spend(self, event_id: str) -> str:
        return f"{self.prefix}s:{event_id}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern for every key of this space (tests clean up with it)."""
        return f"{self.prefix}*"

    @property
    def outbox(self) -> str:
        """Cluster mode: a part's hash of the last fact number per customer part ("Customers
        across parts")."""
        return f"{self.prefix}outbox"

    def outbox_to(self, number: int) -> str:
        """Cluster mode: a part's list of the customer facts for part `number`."""
        return f"{self.prefix}outbox:{number}"

    def part(self, number: int) -> KeySpace:
        """Part `number` of this key space in cluster mode (see "Redis Cluster" above): the
        same keys under a prefix whose hash tag puts them all in one slot."""
        return KeySpace(f"{self.prefix}{{{CLUSTER_TAGS[number]}}}:")

    def in_part(self, key: str, number: int) -> str:
        """A key of this space (`key`, from the methods above) as part `number` has it."""
        if not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not a key of the key space {self.prefix!r}")
        return self.part(number).prefix + key[len(self.prefix) :]


CLUSTER_PARTS: Final = 16
"""Parts of a key space in cluster mode: a batch becomes up to so many script calls, and a
reader reads each bucket so many times. Fixed: the parts a row routes to must not change while
its ids are remembered (changing it is a rebuild into a new key space)."""


def _spread_tags(parts: int) -> tuple[str, ...]:
    """A hash tag per part, the i-th the first of ``c{i}.{j}`` whose slot lies in the i-th of
    `parts` equal slot ranges."""
    width = REDIS_CLUSTER_HASH_SLOTS // parts
    tags: list[str] = []
    for number in range(parts):
        candidate = 0
        while key_slot(f"c{number}.{candidate}".encode()) // width != number:
            candidate += 1
        tags.append(f"c{number}.{candidate}")
    return tuple(tags)


CLUSTER_TAGS: Final = _spread_tags(CLUSTER_PARTS)


def part_of(routing_key: str) -> int:
    """The part (0 .. CLUSTER_PARTS - 1) of a row with this routing key (`stream.cluster`)."""
    return zlib.crc32(routing_key.encode()) % CLUSTER_PARTS


def campaign_field(channel: str, campaign: str, counter: str) -> str:
    """The field of a campaign's counter in ``dc``/``mc`` buckets."""
    return f"{channel}\t{campaign}:{counter}"


# Rebuilds (issue 16, `stream.rebuild`): which key space is live.
ACTIVE_PREFIX_KEY: Final = "adpulse-active-prefix"
"""A string key naming the prefix of the live key space; absent: ``KeySpace()``'s. Every process
reads it at start (the exporter on every scrape), and `adpulse rebuild` sets it once a rebuilt
key space is complete. It lies outside every key space's pattern (a rebuilt prefix is
``adpulse-r<UTC time>:``, e.g. ``adpulse-r20261206T063000.123:``; the default ``adpulse:``), so
deleting an old key space by its pattern never deletes it, nor one key space another's keys."""


def rebuilt_prefix(stamp: str) -> str:
    """The prefix of a key space rebuilt at `stamp` (UTC, YYYYMMDDTHHMMSS.mmm)."""
    return f"adpulse-r{stamp}:"
