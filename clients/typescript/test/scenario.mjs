// Driven by tests/api/clients/typescript.rs, which starts the nodes and kills them: the client in
// Node 20 (with `ws`) against real nodes. Reads its orders on stdin, says where it is on stdout
// (`step NAME`), exits 0 when every check held.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";

import WebSocket from "ws";

import { PresenceClient } from "../dist/index.js";

const env = process.env;
const orders = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = (name) => console.log(`step ${name}`);
const order = async (name) => assert.equal((await orders.next()).value, name);
const within = (ms, what, check) =>
  new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const poll = async () => {
      const value = await check();
      if (value) return resolve(value);
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 50);
    };
    poll();
  });
const read = async (base, user) => (await (await fetch(`${base}/api/v2/presence/${user}`)).json()).data?.[user];

// Watches and a room, at the leaf first, the center next in its urls.
let token = env.TOKEN;
const client = new PresenceClient({
  url: env.LEAF_URL,
  urls: [env.CENTER_URL],
  getToken: () => token,
  device: "laptop",
  WebSocket,
  keepAlive: 1000,
});
const states = [];
client.on("state", (state) => states.push(state));
let view = new Map();
client.watch(["zed"], (v) => (view = new Map(v)));
client.connect();
await within(10_000, "zed online in the view", () => view.get("zed")?.status === "online");
const room = client.join("doc-1", { meta: { name: "Kay" } });
await within(10_000, "kay in the room", () => room.members.has("kay"));
await client.setStatus("busy", { message: "writing" });
step("ready");

// The leaf is killed (service and NATS); zed changes at the center meanwhile.
await order("killed");
await within(15_000, "connected again", () => client.state === "connected" && states.includes("connecting"));
await within(10_000, "zed's change made meanwhile", () => view.get("zed")?.status === "busy");
assert.deepEqual(view.get("zed"), await read(env.CENTER_URL, "zed"), "the view is what REST reads");
await within(10_000, "back in the room at the center", () => room.members.get("kay")?.length === 1);
step("reconnected");

// Another member joins at the center (the driver's own connection): seen with its meta.
await order("joined");
await within(10_000, "lee in the room", () => room.members.get("lee")?.[0]?.meta?.role === "guest");
assert.equal(room.count, 2);
step("seen");

// The center is replaced by a new one with nothing stored: the client says hello again and
// writes its status again.
await order("restarted");
await within(20_000, "the status written again", async () => (await read(env.CENTER_URL, "kay"))?.message === "writing");
step("reasserted");

// Its token expires; the center is replaced again: the reconnect is refused, the client stops.
token = env.EXPIRED_TOKEN;
const stopped = new Promise((resolve) => client.on("error", (e) => e.status === 401 && resolve(e)));
step("expiring");
await order("restarted");
await stopped;
await within(5_000, "disconnected", () => client.state === "disconnected");
room.leave();

// A token refused at connect: the client stops, with an error event.
const refused = new PresenceClient({ url: env.CENTER_URL, getToken: () => env.EXPIRED_TOKEN, WebSocket });
const error = new Promise((resolve) => refused.on("error", resolve));
refused.connect();
const e = await error;
assert.equal(e.status, 401);
assert.equal(refused.state, "disconnected");
step("done");
process.exit(0);
