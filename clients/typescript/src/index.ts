/** presence-client: the Presence service's client for browsers and Node (docs/clients.md). */
export { PresenceClient } from "./client.js";
export { Room } from "./room.js";
export type {
  Change,
  ChangeKind,
  ClientOptions,
  Member,
  Members,
  Presence,
  RoomDiff,
  State,
  Status,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";
export { PresenceError } from "./types.js";
