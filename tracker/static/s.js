/* adpulse site snippet, served by the tracker at /s.js (README, "On your website").
 * Captures campaign parameters on landing, records the click, sends leads and conversions
 * with the stored attribution, and retries what could not be sent. No dependencies. */
(() => {
  "use strict";
  const w = window;
  const before = w.adpulse;
  if (before && before.loaded) return; // included twice
  const script = document.currentScript;
  const data = (script && script.dataset) || {};
  const base = data.endpoint || new URL(script.src).origin;
  const endpoint = base + "/v1/events";
  const STATE = "adpulse";
  const QUEUE = "adpulse_q";
  const DAY = 864e5;
  // The worker remembers a click for 30 days (stream/keys.py Retention.attribution).
  const WINDOW = (+data.attributionDays || 30) * DAY;
  const QUEUE_MAX = 50;
  // The worker drops a repeated event_id for a day: past that a retry could count twice.
  const QUEUE_AGE = DAY;
  const BACKOFF = 2e3;
  const BACKOFF_MAX = 6e5;
  const PARAMS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "gclid", "fbclid", "msclkid", "ttclid", "li_fat_id"];
  const CLICK_PARAM = "adp_click_id";
  const CLICK_ID = /^[\x21-\x7e]{1,128}$/;

  let storage = null;
  try {
    storage = w.localStorage; // throws where the visitor blocks site data
  } catch (e) {}
  let consented = data.consent !== "false";
  const flying = new Set(); // event ids with a request in flight
  let timer = 0;

  const warn = (...args) => console.warn("adpulse:", ...args);
  const id = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const read = (key) => {
    try {
      return JSON.parse(storage.getItem(key));
    } catch (e) {
      return null;
    }
  };
  const write = (key, value) => {
    if (!consented || !storage) return;
    try {
      storage.setItem(key, JSON.stringify(value));
    } catch (e) {
      warn("cannot store", key, e);
    }
  };
  const erase = (key) => {
    try {
      storage.removeItem(key);
    } catch (e) {}
  };

  // The campaign this page was opened from, if any.
  const query = new URL(location.href).searchParams;
  const found = {};
  for (const name of PARAMS) {
    const value = query.get(name);
    if (value) found[name] = value.slice(0, 256);
  }
  const given = query.get(CLICK_PARAM);
  const landed = given || Object.keys(found).length ? JSON.stringify([given, found]) : null;

  function state() {
    const stored = consented && read(STATE);
    if (stored && stored.expires > Date.now() && stored.fields) return stored;
    if (stored) erase(STATE);
    return null;
  }

  function attribution(stored) {
    if (!stored) return {};
    const fields = { campaign: stored.fields.utm_campaign, ...stored.fields };
    if (stored.click_id) fields.click_id = stored.click_id;
    return fields;
  }

  // Records the click of a campaign visit once; a reload of the same landing URL is not a new
  // click. A link through the tracker's /c already recorded its click and names its id.
  // Otherwise the tracker issues the id when it takes the click (its answer's click_ids):
  // signed, it carries the click's channel and campaign, so the worker needs no registry.
  function land() {
    if (!landed || !consented) return;
    const stored = state();
    if (stored && stored.landed === landed) return;
    const own = !(given && CLICK_ID.test(given));
    const click = own ? id() : null;
    const next = { click_id: own ? null : given, click_event: click, fields: found, landed,
      expires: Date.now() + WINDOW };
    write(STATE, next);
    if (own) send({ ...attribution(next), type: "click", event_id: click });
  }

  // The id the tracker issued to this visit's click, kept for the events that follow.
  function adopt(eventId, answer) {
    const issued = answer && Array.isArray(answer.click_ids) ? answer.click_ids[0] : null;
    const stored = state();
    if (typeof issued === "string" && CLICK_ID.test(issued) && stored &&
        stored.click_event === eventId && !stored.click_id) {
      stored.click_id = issued;
      write(STATE, stored);
      numbers(stored); // held back until the visit had its click id
    }
  }

  // Dynamic number insertion: elements marked data-adpulse-phone show the number the tracker
  // leased to this visit from its channel's pool (GET /v1/number), asked on every page so that
  // the lease is renewed while the visitor stays. Without one the page keeps its own number.
  function numbers(stored) {
    // A lease is the visit's (its click id): a click whose id the tracker has not issued yet
    // asks once it has (`adopt`).
    if (!stored || !stored.click_id) return;
    const asked = { ...stored.fields };
    if (stored.click_id) asked.click_id = stored.click_id;
    const query = new URLSearchParams(asked);
    const show = (found) => {
      if (!found || !found.number) return;
      for (const element of document.querySelectorAll("[data-adpulse-phone]")) {
        element.textContent = found.display || found.number;
        if (element.tagName === "A") element.href = "tel:" + found.number;
      }
    };
    fetch(base + "/v1/number?" + query, { credentials: "omit" })
      .then((response) => (response.status === 200 ? response.json() : null))
      .then((found) => {
        if (document.readyState === "loading") {
          document.addEventListener("DOMContentLoaded", () => show(found));
        } else show(found);
      })
      .catch((e) => warn("no tracked number:", e));
  }

  function track(type, fields) {
    if (!consented) return null;
    const event = { ...attribution(state()), event_id: id(), ...(fields || {}), type };
    send(event);
    return event.event_id;
  }

  // Every event goes to the stored queue first and leaves it only when the tracker answered
  // 202, so an event is never lost to a closed tab; each keeps its event_id, which the worker
  // counts once, so a repeated delivery is harmless.
  function send(event) {
    const entry = { e: event, at: Date.now(), n: 0, next: 0 };
    const queue = load();
    queue.push(entry);
    while (queue.length > QUEUE_MAX) warn("retry queue full, event dropped:", queue.shift().e);
    save(queue);
    post(entry);
  }

  function load() {
    const queue = read(QUEUE);
    if (!Array.isArray(queue)) return [];
    const now = Date.now();
    return queue.filter((entry) => {
      const kept = entry && entry.e && now - entry.at < QUEUE_AGE;
      if (!kept) warn("gave up after a day of retries:", entry && entry.e);
      return kept;
    });
  }

  function save(queue) {
    if (queue.length) write(QUEUE, queue);
    else erase(QUEUE);
  }

  function settle(entry, done) {
    const queue = load();
    const index = queue.findIndex((other) => other.e.event_id === entry.e.event_id);
    if (done) {
      if (index >= 0) queue.splice(index, 1);
    } else {
      entry.n += 1;
      const delay = Math.min(BACKOFF * 2 ** (entry.n - 1), BACKOFF_MAX);
      entry.next = Date.now() + delay * (0.5 + Math.random() / 2);
      if (index >= 0) queue[index] = entry;
    }
    save(queue);
  }

  // fetch with keepalive rather than sendBeacon: it outlives the page just as well, and its
  // answer tells whether the tracker took the event (202) so that it can leave the queue;
  // sendBeacon only says that the browser queued the request. sendBeacon is kept for the
  // page's last moment (pagehide) and for browsers without fetch.
  async function post(entry) {
    const eventId = entry.e.event_id;
    if (!consented || flying.has(eventId)) return;
    flying.add(eventId);
    const body = { ...entry.e };
    // A retry says when it happened; the page's clock may be off, so not on the first try.
    if (entry.n && !entry.now) body.ts = entry.at;
    let done = false;
    let again = false;
    try {
      if (!w.fetch) {
        done = navigator.sendBeacon(endpoint, JSON.stringify(body));
      } else {
        const answer = await fetch(endpoint, { method: "POST", body: JSON.stringify(body),
          keepalive: true, credentials: "omit" });
        const status = answer.status;
        if (status === 202) {
          done = true;
          if (body.type === "click" && !body.click_id) {
            adopt(eventId, await answer.json().catch(() => null));
          }
        } else if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
          const reason = await answer.json().catch(() => ({}));
          if (reason.field === "ts" && body.ts) {
            entry.now = 1; // this clock is off: let the tracker date it
            again = true;
          } else {
            // Refused for good: sending it again would be refused again.
            warn("the tracker refused an event:", status, reason, entry.e);
            done = true;
          }
        }
      }
    } catch (e) {
      // The tracker is unreachable (or does not allow this origin): retried later.
    }
    flying.delete(eventId);
    if (again) {
      post(entry);
    } else if (done) {
      settle(entry, true);
    } else {
      settle(entry, false);
      schedule();
    }
  }

  function flush() {
    if (!consented) return;
    const now = Date.now();
    const queue = load();
    save(queue); // without the entries given up on
    for (const entry of queue) if (entry.next <= now) post(entry);
    schedule();
  }

  function schedule() {
    const waiting = load().filter((entry) => !flying.has(entry.e.event_id));
    if (!waiting.length || timer) return;
    const soonest = Math.min(...waiting.map((entry) => entry.next));
    timer = setTimeout(() => {
      timer = 0;
      flush();
    }, Math.max(soonest - Date.now(), 0));
  }

  // The page is going away with events still waiting for their retry: give each one beacon.
  // They stay queued, as a beacon's fate is unknown; if it arrived, the next page's retry is
  // a duplicate the worker drops by event_id.
  w.addEventListener("pagehide", () => {
    if (!consented || !navigator.sendBeacon) return;
    for (const entry of load()) {
      if (entry.n && !flying.has(entry.e.event_id)) {
        navigator.sendBeacon(endpoint, JSON.stringify({ ...entry.e, ts: entry.at }));
      }
    }
  });

  function consent(allowed = true) {
    consented = allowed !== false;
    if (consented) {
      land();
      flush();
    } else {
      // Withdrawn: forget what was stored, and send nothing until given again.
      erase(STATE);
      erase(QUEUE);
    }
  }

  const api = {
    loaded: true,
    // A form sent, a sign-up: the funnel's step before a sale, credited like a conversion
    // (the visit's click id); `lead_id`, the CRM's id, makes a re-sent lead count once.
    lead: (fields) => track("lead", fields),
    conversion: (fields) => track("conversion", fields),
    consent,
    // For a form or a server postback that should carry the visit's click id and UTM tags.
    attribution: () => attribution(state()),
  };
  // Calls made through the install stub before this script loaded: the consent given there
  // applies before anything is stored or sent, the other calls run in their order.
  const calls = (before && before.q) || [];
  const choices = calls.filter((call) => call[0] === "consent");
  if (choices.length) {
    consented = (choices[choices.length - 1][1] || [])[0] !== false;
    if (!consented) consent(false);
  }
  w.adpulse = api;
  land();
  if (consented) numbers(state());
  flush();
  for (const [name, args] of calls) if (name !== "consent" && api[name]) api[name](...args);
})();
