/**
 * The client: one WebSocket per client, carrying this device's session (`hello`, when `getToken`
 * is given), every watch and every room. On each (re)connect: a fresh token, `hello`, the union
 * of the watch lists, the rooms joined again, the status set with `setStatus` written again.
 * Between attempts a jittered exponential backoff (0.5 s to 20 s, reset after a connection that
 * held 30 s), moving along `urls`; a connection silent for two keep-alive periods is dead; a
 * refused token (401, 403) stops it with an `error` event.
 */
import { Room, type RoomWire } from "./room.js";
import {
  type Change,
  type ClientOptions,
  type Presence,
  PresenceError,
  type State,
  type Status,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./types.js";
import { putStatus, type StatusBody } from "./rest.js";
import { View, type WireChange } from "./view.js";

type WatchListener = (view: ReadonlyMap<string, Presence>, changes: readonly Change[]) => void;
type Listeners = {
  state: (state: State, previous: State) => void;
  stale: () => void;
  fresh: () => void;
  error: (error: PresenceError) => void;
};

const BACKOFF_FIRST = 500;
const BACKOFF_MOST = 20_000;
const STABLE = 30_000;
const ACTIVITY_EVERY = 10_000;
const OPEN = 1;

export class PresenceClient {
  private readonly nodes: string[];
  private readonly device: string;
  private readonly kind: string;
  private readonly keepAlive: number;
  private readonly WebSocket: WebSocketConstructor;
  private readonly view = new View();
  private readonly watches = new Map<number, { users: Set<string>; listener: WatchListener; fresh: boolean }>();
  private readonly rooms = new Map<string, Room>();
  private readonly listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    state: new Set(),
    stale: new Set(),
    fresh: new Set(),
    error: new Set(),
  };
  private current: State = "disconnected";
  private socket: WebSocketLike | null = null;
  private subscribed = new Set<string>();
  private wanted = false;
  private failures = 0;
  private node = 0;
  private nextWatch = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private silence: ReturnType<typeof setTimeout> | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  private lastActivity = 0;
  private manual: StatusBody | null = null;

  constructor(private readonly options: ClientOptions) {
    this.nodes = [options.url, ...(options.urls ?? [])].map((u) => u.replace(/\/+$/, ""));
    this.device = options.device ?? `web-${Math.random().toString(36).slice(2, 10)}`;
    this.kind = options.kind ?? "web";
    this.keepAlive = options.keepAlive ?? 15_000;
    const WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketImpl) throw new Error("no WebSocket here: pass one (`import WebSocket from \"ws\"`) as `WebSocket`");
    this.WebSocket = WebSocketImpl;
  }

  /** The connection's state. */
  get state(): State {
    return this.current;
  }

  on<K extends keyof Listeners>(event: K, listener: Listeners[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  connect(): void {
    this.wanted = true;
    if (this.current === "disconnected") this.open();
  }

  /** Closes the connection (the session ends at once) and stops reconnecting. */
  disconnect(): void {
    this.wanted = false;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "bye");
    this.setState("disconnected");
  }

  /** Watches `users`: `listener(view, changes)` with where they stand, then at each change. */
  watch(users: string[], listener: WatchListener): () => void {
    const id = this.nextWatch++;
    const watch = { users: new Set(users), listener, fresh: true };
    this.watches.set(id, watch);
    const known = users.every((u) => this.subscribed.has(u)) && !this.view.awaiting && this.current === "connected";
    if (known) {
      watch.fresh = false;
      listener(this.viewOf(watch.users), users.flatMap((u) => this.entry(u)));
    }
    this.resubscribe();
    return () => {
      this.watches.delete(id);
      this.resubscribe();
    };
  }

  /** Sets the token's user's status over REST; written again after each reconnect. */
  async setStatus(status: Status, options: { message?: string; ttl?: number } = {}): Promise<Presence> {
    const presence = await this.putStatus({ status, ...options });
    this.manual = { status, ...options };
    return presence;
  }

  /** The person is active on this device (at most one message per 10 s). */
  activity(): void {
    const now = Date.now();
    if (now - this.lastActivity < ACTIVITY_EVERY) return;
    this.lastActivity = now;
    this.send({ type: "activity" });
  }

  /** Joins `room` with this device; rejoined after each reconnect. */
  join(name: string, options: { meta?: unknown } = {}): Room {
    const room =
      this.rooms.get(name) ??
      new Room(name, options.meta ?? {}, (m) => this.send(m), (r) => this.rooms.delete(r.name));
    room.meta = options.meta ?? room.meta;
    this.rooms.set(name, room);
    this.send({ type: "join", room: name, meta: room.meta });
    return room;
  }

  private viewOf(users: Set<string>): ReadonlyMap<string, Presence> {
    const view = new Map<string, Presence>();
    for (const user of users) {
      const presence = this.view.get(user);
      if (presence) view.set(user, presence);
    }
    return view;
  }

  private entry(user: string): Change[] {
    const known = this.view.entries.get(user);
    return known ? [{ user_id: user, kind: "snapshot", presence: known.presence, revision: known.revision }] : [];
  }

  private async token(): Promise<string> {
    if (!this.options.getToken) throw new PresenceError("this needs a token: give the client getToken");
    return await this.options.getToken();
  }

  private async putStatus(body: StatusBody): Promise<Presence> {
    // From the node connected to (or last tried), then the others.
    const order = this.nodes.map((_, i) => this.nodes[(this.node + i) % this.nodes.length]);
    return await putStatus(order, await this.token(), body);
  }

  private open(): void {
    this.clearTimers();
    this.setState("connecting");
    const base = this.nodes[this.node];
    const started = Date.now();
    const attempt = async () => {
      const token = this.options.getToken ? await this.token() : null;
      if (!this.wanted) return;
      const socket = new this.WebSocket(`${base.replace(/^http/, "ws")}/api/v2/ws`);
      this.socket = socket;
      socket.onopen = () => {
        this.alive();
        if (token !== null) {
          socket.send(JSON.stringify({ type: "hello", token, device: this.device, kind: this.kind }));
        } else {
          this.ready();
        }
      };
      socket.onmessage = (event) => {
        if (socket !== this.socket) return;
        this.alive();
        this.received(String(event.data));
      };
      socket.onerror = () => {};
      socket.onclose = (event) => {
        if (socket !== this.socket) return;
        this.socket = null;
        if (event.code === 4401 || event.code === 4403) return this.refused(event.reason, event.code - 4000);
        this.lost(Date.now() - started);
      };
    };
    attempt().catch((e) => {
      this.emit("error", new PresenceError(`the token provider failed: ${String(e)}`));
      this.lost(0);
    });
  }

  private ready(): void {
    this.setState("connected");
    // Browsers show no protocol ping to a page: a `ping` message a period keeps traffic flowing,
    // so that silence means a dead connection.
    this.pinger = setInterval(() => this.send({ type: "ping" }), this.keepAlive);
    this.subscribed = new Set();
    this.resubscribe();
    for (const room of this.rooms.values()) this.send({ type: "join", room: room.name, meta: room.meta });
    if (this.manual) this.putStatus(this.manual).catch((e) => this.emit("error", asError(e)));
  }

  private received(text: string): void {
    let message: Record<string, any>;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.type) {
      case "welcome":
        return this.ready();
      case "snapshot":
        return this.dispatch(this.view.snapshot(message.data ?? {}, message.revisions ?? {}), true);
      case "changes":
        return this.dispatch(this.view.changes(message.changes as WireChange[]), false);
      case "stale":
      case "fresh":
        return this.emit(message.type);
      case "joined":
        return this.rooms.get(message.room)?.snapshot(message as RoomWire);
      case "room":
        return this.rooms.get(message.room)?.change(message as RoomWire);
      case "error":
        if (message.status === 401 || message.status === 403) return this.refused(message.error, message.status);
        return this.emit("error", new PresenceError(message.error ?? "error", message.status));
    }
  }

  private dispatch(changes: Change[], snapshot: boolean): void {
    for (const watch of this.watches.values()) {
      if (snapshot && watch.fresh) {
        watch.fresh = false;
        watch.listener(this.viewOf(watch.users), [...watch.users].flatMap((u) => this.entry(u)));
        continue;
      }
      const mine = changes.filter((c) => watch.users.has(c.user_id));
      if (mine.length) watch.listener(this.viewOf(watch.users), mine);
    }
  }

  private resubscribe(): void {
    const wanted = new Set<string>();
    for (const watch of this.watches.values()) for (const user of watch.users) wanted.add(user);
    this.view.keep(wanted);
    if (this.current !== "connected") return;
    const gone = [...this.subscribed].filter((u) => !wanted.has(u));
    const added = [...wanted].some((u) => !this.subscribed.has(u));
    if (added) {
      this.send({ type: "subscribe", users: [...wanted] });
      this.view.subscribed();
    } else if (gone.length) {
      this.send({ type: "unsubscribe", users: gone });
    }
    this.subscribed = wanted;
  }

  private send(message: Record<string, unknown>): void {
    if (this.socket?.readyState === OPEN && this.current === "connected") this.socket.send(JSON.stringify(message));
  }

  /** Traffic: the connection is alive for two more keep-alive periods. */
  private alive(): void {
    if (this.silence) clearTimeout(this.silence);
    this.silence = setTimeout(() => this.socket?.close(4000, "silent"), 2 * this.keepAlive);
  }

  private lost(heldFor: number): void {
    this.clearTimers();
    if (!this.wanted) return this.setState("disconnected");
    if (heldFor >= STABLE) this.failures = 0;
    this.node = (this.node + 1) % this.nodes.length;
    const full = Math.min(BACKOFF_MOST, BACKOFF_FIRST * 2 ** Math.min(this.failures, 6));
    this.failures++;
    this.setState("connecting");
    this.timer = setTimeout(() => this.open(), full * (0.5 + Math.random() * 0.5));
  }

  private refused(reason: string, status: number): void {
    this.wanted = false;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
    this.setState("disconnected");
    this.emit("error", new PresenceError(`the token was refused: ${reason}`, status));
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.silence) clearTimeout(this.silence);
    if (this.pinger) clearInterval(this.pinger);
    this.timer = this.silence = this.pinger = null;
  }

  private setState(state: State): void {
    const previous = this.current;
    if (previous === state) return;
    this.current = state;
    for (const listener of this.listeners.state) listener(state, previous);
  }

  private emit(event: "stale" | "fresh"): void;
  private emit(event: "error", error: PresenceError): void;
  private emit(event: "stale" | "fresh" | "error", error?: PresenceError): void {
    if (event === "error") for (const listener of this.listeners.error) listener(error!);
    else for (const listener of this.listeners[event]) listener();
  }
}

function asError(e: unknown): PresenceError {
  return e instanceof PresenceError ? e : new PresenceError(String(e));
}
