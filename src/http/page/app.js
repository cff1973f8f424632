// The node's own page: watch users live (Server-Sent Events) and set your own status.
// Everything is here; nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;

function setLink(text, kind) {
  const link = $("link");
  link.textContent = text;
  link.className = "link" + (kind ? " link-" + kind : "");
}

function show(presence) {
  const body = $("presences").tBodies[0];
  let row = body.querySelector(`tr[data-user="${CSS.escape(presence.user_id)}"]`);
  if (!row) {
    row = body.insertRow();
    row.dataset.user = presence.user_id;
    for (let i = 0; i < 4; i++) row.insertCell();
    row.cells[0].textContent = presence.user_id;
  }
  row.cells[1].textContent = presence.status;
  row.cells[1].className = "status status-" + presence.status;
  row.cells[2].textContent = presence.message || "";
  row.cells[3].textContent = presence.last_seen ? new Date(presence.last_seen).toLocaleString() : "never";
}

function watch(users) {
  if (source) source.close();
  $("presences").tBodies[0].replaceChildren();
  $("watch-error").textContent = "";
  const params = new URLSearchParams({ users: users.join(",") });
  history.replaceState(null, "", "?" + params);
  source = new EventSource("/api/v2/presence/stream?" + params);
  setLink("connecting");
  source.addEventListener("snapshot", (e) => {
    setLink("live", "live");
    for (const presence of Object.values(JSON.parse(e.data).data)) show(presence);
  });
  source.addEventListener("change", (e) => {
    for (const change of JSON.parse(e.data).changes) show(change.presence);
  });
  source.addEventListener("stale", () => setLink("stale: the node lost its link", "stale"));
  source.addEventListener("fresh", () => setLink("live", "live"));
  source.addEventListener("closed", () => setLink("closed by the node"));
  source.onerror = () => setLink("reconnecting");
}

$("watch-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const users = $("users").value.split(/[\s,]+/).filter(Boolean);
  if (users.length === 0) return;
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
  if (!user) {
    result.textContent = "That does not look like a token.";
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
  result.textContent = response.ok ? `${user} is ${answer.data[user].status}.` : answer.error;
});

const initial = new URLSearchParams(location.search).get("users");
if (initial) {
  $("users").value = initial;
  watch(initial.split(",").filter(Boolean));
}
