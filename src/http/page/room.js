// The page's room view: join a room over the WebSocket with the token pasted above, see its
// members and who is typing, live; type to show the others that you are typing.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let socket = null;
  // (user, device) → the member's entry, as the room's messages say (docs/rooms.md).
  let members = new Map();
  let room = null;
  let typingSent = 0;
  // A device id of this tab's own, kept across reloads of the tab: a reconnect continues its session.
  const device = sessionStorage.getItem("presence-device") ||
    "page-" + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem("presence-device", device);

  const key = (user, entry) => user + "\u0000" + entry.device;

  function put(groups) {
    for (const [user, entries] of Object.entries(groups || {})) {
      for (const entry of entries) members.set(key(user, entry), { user, ...entry });
    }
  }

  function remove(groups) {
    for (const [user, entries] of Object.entries(groups || {})) {
      for (const entry of entries) members.delete(key(user, entry));
    }
  }

  function render(count, connections) {
    const body = $("members").tBodies[0];
    const rows = [...members.values()].sort((a, b) => (a.user + a.device).localeCompare(b.user + b.device));
    body.replaceChildren(...rows.map((m) => {
      const row = document.createElement("tr");
      row.dataset.user = m.user;
      row.dataset.device = m.device;
      for (const text of [m.user, `${m.device} (${m.kind})`, JSON.stringify(m.meta)]) {
        row.insertCell().textContent = text;
      }
      return row;
    }));
    $("members").hidden = false;
    $("room-count").textContent = `${room}: ${count} ${count === 1 ? "user" : "users"} on ${connections} ${connections === 1 ? "device" : "devices"}`;
  }

  function typing(users) {
    $("typing").textContent = users.length === 0 ? "" : `${users.join(", ")} ${users.length === 1 ? "is" : "are"} typing…`;
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function receive(message) {
    switch (message.type) {
      case "welcome":
        send({ type: "join", room, meta: $("room-name").value ? { name: $("room-name").value } : {} });
        break;
      case "joined":
        members = new Map();
        put(message.members);
        render(message.count, message.connections);
        typing(message.typing || []);
        $("leave").hidden = false;
        $("say").hidden = false;
        break;
      case "room":
        put(message.joins);
        put(message.updates);
        remove(message.leaves);
        render(message.count, message.connections);
        if (message.typing) typing(message.typing);
        break;
      case "error":
        $("room-error").textContent = message.error;
        break;
    }
  }

  function leave() {
    if (socket) socket.close(1000);
    socket = null;
    $("leave").hidden = true;
    $("say").hidden = true;
    $("members").hidden = true;
    $("typing").textContent = "";
    $("room-count").textContent = "You left the room.";
  }

  $("room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    room = $("room").value.trim();
    $("room-error").textContent = "";
    if (!room) return void ($("room-error").textContent = "Enter a room id.");
    if (!token) return void ($("room-error").textContent = "Paste your token above first.");
    if (socket) socket.close(1000);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/api/v2/ws");
    socket.onopen = () => send({ type: "hello", token, device, kind: "web" });
    socket.onmessage = (event) => receive(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (event.code !== 1000 && event.code !== 1005) {
        $("room-error").textContent = `The node closed the connection (${event.code} ${event.reason}).`;
      }
    };
  });

  $("leave").addEventListener("click", () => {
    send({ type: "leave", room });
    leave();
  });

  // A typing signal at most every 3 s while typing (the node ends it 10 s after the last); a stop
  // when the box is emptied or left.
  $("say").addEventListener("input", () => {
    if (!$("say").value) {
      typingSent = 0;
      return send({ type: "typing", room, active: false });
    }
    if (Date.now() - typingSent > 3000) {
      typingSent = Date.now();
      send({ type: "typing", room });
    }
  });
  $("say").addEventListener("blur", () => {
    typingSent = 0;
    send({ type: "typing", room, active: false });
  });
})();
