/** presence-client: the Presence service's client for browsers and Node (docs/clients.md). */
export { PresenceClient } from "./client.js";
export { Room } from "./room.js";
export { PresenceError } from "./types.js";
