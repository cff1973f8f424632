// The view's ordering rules, on the built client (npm run build first).
import assert from "node:assert/strict";
import { test } from "node:test";

import { View } from "../dist/view.js";

const presence = (user, status) => ({ user_id: user, status });
const wire = (user, kind, status, revision) => ({ user_id: user, kind, presence: presence(user, status), revision });

test("an older revision never regresses the view", () => {
  const view = new View();
  assert.equal(view.changes([wire("ann", "update", "busy", 5)]).length, 1);
  assert.deepEqual(view.changes([wire("ann", "update", "online", 4)]), []);
  assert.equal(view.get("ann").status, "busy");
  assert.equal(view.changes([wire("ann", "expire", "offline", 5)])[0].kind, "expire");
  assert.deepEqual(view.changes([wire("ann", "expire", "offline", 5)]), []);
});

test("changes crossing a subscribe wait for its snapshot and apply if newer", () => {
  const view = new View();
  view.changes([wire("ann", "update", "online", 3)]);
  view.subscribed();
  assert.deepEqual(view.changes([wire("ann", "update", "away", 4), wire("bob", "update", "busy", 9)]), []);
  const told = view.snapshot({ ann: presence("ann", "busy"), bob: presence("bob", "online") }, { ann: 6, bob: 8 });
  assert.deepEqual(told.map((c) => [c.user_id, c.kind, c.presence.status]), [
    ["ann", "snapshot", "busy"],
    ["bob", "snapshot", "online"],
    ["bob", "update", "busy"],
  ]);
  assert.equal(view.get("ann").status, "busy");
});

test("a snapshot from a node behind does not take the view back", () => {
  const view = new View();
  view.changes([wire("ann", "update", "busy", 7)]);
  view.subscribed();
  assert.deepEqual(view.snapshot({ ann: presence("ann", "online") }, { ann: 6 }), []);
  assert.equal(view.get("ann").status, "busy");
});
