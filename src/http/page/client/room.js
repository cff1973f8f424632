export class Room {
    name;
    meta;
    send;
    drop;
    /** Users in the room now. */
    count = 0;
    /** Their devices in it now. */
    connections = 0;
    state = new Map();
    typers = [];
    listeners = new Set();
    /** @internal */
    constructor(name, 
    /** @internal */ meta, send, drop) {
        this.name = name;
        this.meta = meta;
        this.send = send;
        this.drop = drop;
    }
    /** Who is in the room: user → their devices in it. */
    get members() {
        return this.state;
    }
    /** Who is typing now. */
    get whoIsTyping() {
        return this.typers;
    }
    on(event, listener) {
        if (event !== "change")
            throw new Error(`no event ${event}`);
        this.listeners.add(listener);
        return () => this.listeners.delete(listener);
    }
    /** This device's meta in the room (kept for rejoining after a reconnect). */
    update(meta) {
        this.meta = meta;
        this.send({ type: "meta", room: this.name, meta });
    }
    /** This person is typing here (call it every few seconds while they are); `false` stops. */
    typing(active = true) {
        this.send({ type: "typing", room: this.name, active });
    }
    leave() {
        this.send({ type: "leave", room: this.name });
        this.drop(this);
        this.listeners.clear();
    }
    /** @internal The room as it is (`joined`): replaces what was known, told as a diff. */
    snapshot(wire) {
        const before = this.state;
        const after = new Map(Object.entries(wire.members ?? {}));
        const joins = {};
        const leaves = {};
        for (const [user, devices] of after)
            if (!same(before.get(user), devices))
                joins[user] = devices;
        for (const [user, devices] of before)
            if (!after.has(user))
                leaves[user] = devices;
        this.state = after;
        this.count = wire.count ?? after.size;
        this.connections = wire.connections ?? [...after.values()].reduce((n, d) => n + d.length, 0);
        this.typers = wire.typing ?? [];
        this.emit({ joins, updates: {}, leaves, typing: this.typers });
    }
    /** @internal A `room` change: joins and updates put, leaves remove, per (user, device). */
    change(wire) {
        for (const group of [wire.joins, wire.updates]) {
            for (const [user, devices] of Object.entries(group ?? {})) {
                const kept = (this.state.get(user) ?? []).filter((d) => !devices.some((n) => n.device === d.device));
                this.state.set(user, [...kept, ...devices]);
            }
        }
        for (const [user, devices] of Object.entries(wire.leaves ?? {})) {
            const kept = (this.state.get(user) ?? []).filter((d) => !devices.some((n) => n.device === d.device));
            if (kept.length)
                this.state.set(user, kept);
            else
                this.state.delete(user);
        }
        if (wire.count !== undefined)
            this.count = wire.count;
        if (wire.connections !== undefined)
            this.connections = wire.connections;
        if (wire.typing)
            this.typers = wire.typing;
        this.emit({ joins: wire.joins ?? {}, updates: wire.updates ?? {}, leaves: wire.leaves ?? {}, typing: this.typers });
    }
    emit(diff) {
        for (const listener of this.listeners)
            listener(this.state, diff);
    }
}
function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
}
