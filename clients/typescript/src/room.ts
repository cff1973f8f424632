/** A room this client joined: its members live, kept by the node's `joined` and `room` messages. */
import type { Member, Members, RoomDiff } from "./types.js";

type Listener = (members: Members, diff: RoomDiff) => void;

export interface RoomWire {
  room: string;
  count?: number;
  connections?: number;
  typing?: string[];
  members?: Record<string, Member[]>;
  joins?: Record<string, Member[]>;
  updates?: Record<string, Member[]>;
  leaves?: Record<string, Member[]>;
}

export class Room {
  /** Users in the room now. */
  count = 0;
  /** Their devices in it now. */
  connections = 0;
  private state = new Map<string, Member[]>();
  private typers: string[] = [];
  private listeners = new Set<Listener>();

  /** @internal */
  constructor(
    readonly name: string,
    /** @internal */ public meta: unknown,
    private readonly send: (message: Record<string, unknown>) => void,
    private readonly drop: (room: Room) => void,
  ) {}

  /** Who is in the room: user → their devices in it. */
  get members(): Members {
    return this.state;
  }

  /** Who is typing now. */
  get whoIsTyping(): readonly string[] {
    return this.typers;
  }

  on(event: "change", listener: Listener): () => void {
    if (event !== "change") throw new Error(`no event ${event}`);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** This device's meta in the room (kept for rejoining after a reconnect). */
  update(meta: unknown): void {
    this.meta = meta;
    this.send({ type: "meta", room: this.name, meta });
  }

  /** This person is typing here (call it every few seconds while they are); `false` stops. */
  typing(active = true): void {
    this.send({ type: "typing", room: this.name, active });
  }

  leave(): void {
    this.send({ type: "leave", room: this.name });
    this.drop(this);
    this.listeners.clear();
  }

  /** @internal The room as it is (`joined`): replaces what was known, told as a diff. */
  snapshot(wire: RoomWire): void {
    const before = this.state;
    const after = new Map(Object.entries(wire.members ?? {}));
    const joins: Record<string, Member[]> = {};
    const leaves: Record<string, Member[]> = {};
    for (const [user, devices] of after) if (!same(before.get(user), devices)) joins[user] = devices;
    for (const [user, devices] of before) if (!after.has(user)) leaves[user] = devices;
    this.state = after;
    this.count = wire.count ?? after.size;
    this.connections = wire.connections ?? [...after.values()].reduce((n, d) => n + d.length, 0);
    this.typers = wire.typing ?? [];
    this.emit({ joins, updates: {}, leaves, typing: this.typers });
  }

  /** @internal A `room` change: joins and updates put, leaves remove, per (user, device). */
  change(wire: RoomWire): void {
    for (const group of [wire.joins, wire.updates]) {
      for (const [user, devices] of Object.entries(group ?? {})) {
        const kept = (this.state.get(user) ?? []).filter((d) => !devices.some((n) => n.device === d.device));
        this.state.set(user, [...kept, ...devices]);
      }
    }
    for (const [user, devices] of Object.entries(wire.leaves ?? {})) {
      const kept = (this.state.get(user) ?? []).filter((d) => !devices.some((n) => n.device === d.device));
      if (kept.length) this.state.set(user, kept);
      else this.state.delete(user);
    }
    if (wire.count !== undefined) this.count = wire.count;
    if (wire.connections !== undefined) this.connections = wire.connections;
    if (wire.typing) this.typers = wire.typing;
    this.emit({ joins: wire.joins ?? {}, updates: wire.updates ?? {}, leaves: wire.leaves ?? {}, typing: this.typers });
  }

  private emit(diff: RoomDiff): void {
    for (const listener of this.listeners) listener(this.state, diff);
  }
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
