// The node's own page: watch users live (through the TypeScript client) and set your own status.
// Everything is here; nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;
// Who the pasted token is for and the status they last set here: their own row says
// "invisible" where everyone else (and the public stream) sees "offline".
let me = null;

function setLink(text, kind) {
  const link = $("link");
  link.textContent = text;
  link.className = "link" + (kind ? " link-" + kind : "");
}

const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

// "just now", "5 minutes ago", "yesterday", ... for an RFC 3339 time.
function ago(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (Math.abs(seconds) < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return RELATIVE.format(Math.round(seconds / size), unit);
  }
  return RELATIVE.format(-1, "minute");
}

function exact(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
}

// A <time> showing `iso` relative to now, exact on hover; refreshed by `tick`.
function timeOf(iso) {
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = exact(iso);
  time.textContent = ago(iso);
  return time;
}

function tick() {
  for (const time of document.querySelectorAll("time[data-relative]")) time.textContent = ago(time.dateTime);
}
setInterval(tick, 15000);

const PRESENT = ["online", "away", "busy"];

function show(presence) {
  const body = $("presences").tBodies[0];
  let row = body.querySelector(`tr[data-user="${CSS.escape(presence.user_id)}"]`);
  if (!row) {
    row = body.insertRow();
    row.dataset.user = presence.user_id;
    for (let i = 0; i < 3; i++) row.insertCell();
    row.cells[0].textContent = presence.user_id;
  }
  if (me && me.user === presence.user_id && presence.status !== "offline") me = null;
  const invisible = me && me.user === presence.user_id && me.status === "invisible";
  const status = invisible ? "invisible" : presence.status;
  const badge = document.createElement("span");
  badge.className = "status status-" + status;
  badge.textContent = status;
  const parts = [badge];
  if (invisible) parts.push(line("note", "you: everyone else sees offline"));
  if (presence.message) parts.push(line("message", presence.message));
  row.cells[1].replaceChildren(...parts);
  row.cells[2].replaceChildren(seen(presence));
}

function line(kind, text) {
  const div = document.createElement("div");
  div.className = kind;
  div.textContent = text;
  return div;
}

// "now" for someone present; otherwise when they last were, or "never".
function seen(presence) {
  if (PRESENT.includes(presence.status)) {
    const now = document.createElement("span");
    now.textContent = "now";
    if (presence.updated_at) now.title = "Status set " + exact(presence.updated_at);
    return now;
  }
  if (!presence.last_seen) return document.createTextNode("never");
  const time = timeOf(presence.last_seen);
  time.dataset.relative = "";
  return time;
}

// Watching goes through the project's TypeScript client (clients/typescript, served from
// /page/client/): one WebSocket, reconnects with backoff, the revision rules.
let client = null;
let stopWatching = null;
let connectedOnce = false;

async function watch(users) {
  const { PresenceClient } = await import("/page/client/index.js");
  if (!client) {
    client = new PresenceClient({ url: location.origin });
    client.on("state", (state) => {
      if (state === "connected") {
        connectedOnce = true;
        setLink("live", "live");
      } else if (state === "connecting") {
        setLink(connectedOnce ? "reconnecting" : "connecting");
      } else {
        setLink("closed");
      }
    });
    client.on("stale", () => setLink("stale: the node lost its link", "stale"));
    client.on("fresh", () => setLink("live", "live"));
    client.on("error", (e) => ($("watch-error").textContent = e.message));
    client.connect();
  }
  if (stopWatching) stopWatching();
  $("presences").tBodies[0].replaceChildren();
  $("presences").hidden = false;
  $("empty").hidden = true;
  $("watch-error").textContent = "";
  history.replaceState(null, "", "?" + new URLSearchParams({ users: users.join(",") }));
  stopWatching = client.watch(users, (view, changes) => {
    for (const change of changes) show(change.presence);
  });
}

$("watch-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const users = $("users").value.split(/[\s,]+/).filter(Boolean);
  if (users.length === 0) {
    $("watch-error").textContent = "Enter at least one user id.";
    return;
  }
  // Ask once with a plain read first, so that a bad list gets its error message shown.
  const check = await fetch("/api/v2/presence?users=" + encodeURIComponent(users.join(",")));
  if (!check.ok) {
    $("watch-error").textContent = (await check.json()).error;
    return;
  }
  watch(users);
});

function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub;
  } catch {
    return null;
  }
}

$("status-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  const user = subjectOf(token);
  const result = $("status-result");
  result.className = "";
  if (!user) {
    result.textContent = "That does not look like a token.";
    result.className = "error";
    return;
  }
  const body = { status: $("status").value };
  if ($("message").value) body.message = $("message").value;
  const response = await fetch("/api/v2/presence/" + encodeURIComponent(user), {
    method: "PUT",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    result.textContent = answer.error;
    result.className = "error";
    return;
  }
  const presence = answer.data[user];
  me = { user, status: presence.status };
  result.textContent = presence.status === "invisible"
    ? `${user} is invisible: everyone else sees ${user} as offline.`
    : `${user} is ${presence.status}.`;
  const row = $("presences").tBodies[0].querySelector(`tr[data-user="${CSS.escape(user)}"]`);
  if (row && presence.status === "invisible") show({ ...presence, status: "offline" });
});

const initial = new URLSearchParams(location.search).get("users");
if (initial) {
  $("users").value = initial;
  watch(initial.split(",").filter(Boolean));
}
