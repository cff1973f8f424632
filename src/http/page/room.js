// The page's room view, through the project's TypeScript client (served from /page/client/):
// join a room with the token pasted above, see its members and who is typing, live; type to show
// the others that you are typing. The client joins again after a reconnect.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let client = null;
  let room = null;
  let typingSent = 0;
  // A device id of this tab's own, kept across reloads of the tab: a reconnect continues its session.
  const device = sessionStorage.getItem("presence-device") ||
    "page-" + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem("presence-device", device);

  function render() {
    const body = $("members").tBodies[0];
    const rows = [...room.members].flatMap(([user, devices]) => devices.map((d) => ({ user, ...d })));
    rows.sort((a, b) => (a.user + a.device).localeCompare(b.user + b.device));
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
    const [count, connections] = [room.count, room.connections];
    $("room-count").textContent = `${room.name}: ${count} ${count === 1 ? "user" : "users"} on ${connections} ${connections === 1 ? "device" : "devices"}`;
    const users = room.whoIsTyping;
    $("typing").textContent = users.length === 0 ? "" : `${users.join(", ")} ${users.length === 1 ? "is" : "are"} typing…`;
    $("leave").hidden = false;
    $("say").hidden = false;
  }

  function leave() {
    if (room) room.leave();
    if (client) client.disconnect();
    room = client = null;
    $("leave").hidden = true;
    $("say").hidden = true;
    $("members").hidden = true;
    $("typing").textContent = "";
    $("room-count").textContent = "You left the room.";
  }

  $("room-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    const name = $("room").value.trim();
    $("room-error").textContent = "";
    if (!name) return void ($("room-error").textContent = "Enter a room id.");
    if (!token) return void ($("room-error").textContent = "Paste your token above first.");
    if (client) client.disconnect();
    const { PresenceClient } = await import("/page/client/index.js");
    client = new PresenceClient({ url: location.origin, getToken: () => token, device, kind: "web" });
    client.on("error", (error) => ($("room-error").textContent = error.message));
    client.connect();
    room = client.join(name, { meta: $("room-name").value ? { name: $("room-name").value } : {} });
    room.on("change", render);
  });

  $("leave").addEventListener("click", leave);

  // A typing signal at most every 3 s while typing (the node ends it 10 s after the last); a stop
  // when the box is emptied or left.
  $("say").addEventListener("input", () => {
    if (!room) return;
    if (!$("say").value) {
      typingSent = 0;
      return room.typing(false);
    }
    if (Date.now() - typingSent > 3000) {
      typingSent = Date.now();
      room.typing(true);
    }
  });
  $("say").addEventListener("blur", () => {
    typingSent = 0;
    if (room) room.typing(false);
  });
})();
