/** What the node tells, and what the client takes. */

/** A status; `invisible` only its owner sees (everyone else reads `offline`). */
export type Status = "online" | "away" | "busy" | "offline" | "invisible";

/** A user's presence, as the node shows it. */
export interface Presence {
  readonly user_id: string;
  readonly status: Status;
  readonly message?: string;
  readonly last_seen?: string;
  readonly updated_at?: string;
  readonly devices?: Readonly<Record<string, Status>>;
  readonly [other: string]: unknown;
}

/** What made a change: a write, an expiry, an erasure, or a snapshot that showed it otherwise. */
export type ChangeKind = "update" | "expire" | "erase" | "snapshot";

/** A change to a watched user. */
export interface Change {
  readonly user_id: string;
  readonly kind: ChangeKind;
  readonly presence: Presence;
  /** The KV revision behind it (0 for a user never seen). */
  readonly revision: number;
}

/** The connection's state. */
export type State = "disconnected" | "connecting" | "connected";

/** A device in a room. */
export interface Member {
  readonly device: string;
  readonly kind: string;
  readonly meta: unknown;
  readonly joined_at: string;
}

/** A room's members: user → their devices in it. */
export type Members = ReadonlyMap<string, readonly Member[]>;

/** What a room's change did. */
export interface RoomDiff {
  readonly joins: Readonly<Record<string, readonly Member[]>>;
  readonly updates: Readonly<Record<string, readonly Member[]>>;
  readonly leaves: Readonly<Record<string, readonly Member[]>>;
  readonly typing: readonly string[];
}

/** A WebSocket constructor: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** A node's base URL (`https://presence.example.com`). */
  url: string;
  /** More nodes to fail over to, tried in order after `url`. */
  urls?: string[];
  /** Gives a fresh token at each (re)connect and for each write; with one, the connection holds
   * this device's session and `setStatus` works. */
  getToken?: () => string | Promise<string>;
  /** This device (default: a random one, kept for the client's life). */
  device?: string;
  /** `web`, `mobile`, `desktop` or `other` (default `web`). */
  kind?: string;
  /** The WebSocket implementation: required in Node 20 (`import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** The node's `stream.keep_alive` in ms (default 15000): silent for two is dead. */
  keepAlive?: number;
}

/** A refused token (401/403), or an error the node sent. */
export class PresenceError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = "PresenceError";
  }
}
