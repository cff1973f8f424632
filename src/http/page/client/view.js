export class View {
    entries = new Map();
    held = null;
    /** A subscribe went out: changes wait for its snapshot. */
    subscribed() {
        this.held ??= [];
    }
    get awaiting() {
        return this.held !== null;
    }
    get(user) {
        return this.entries.get(user)?.presence;
    }
    /** Keeps only the users still watched. */
    keep(watched) {
        for (const user of this.entries.keys())
            if (!watched.has(user))
                this.entries.delete(user);
    }
    changes(changes) {
        if (this.held) {
            this.held.push(...changes);
            return [];
        }
        return changes.flatMap((c) => this.apply(c));
    }
    snapshot(data, revisions) {
        const told = [];
        for (const [user, presence] of Object.entries(data)) {
            const revision = revisions[user] ?? 0;
            const known = this.entries.get(user);
            if (known && known.revision > revision)
                continue;
            if (!known || !same(known.presence, presence)) {
                told.push({ user_id: user, kind: "snapshot", presence, revision });
            }
            this.entries.set(user, { presence, revision });
        }
        const held = this.held ?? [];
        this.held = null;
        for (const change of held)
            told.push(...this.apply(change));
        return told;
    }
    apply(change) {
        const kind = change.kind === "expire" ? "expire" : change.kind === "erase" ? "erase" : "update";
        const known = this.entries.get(change.user_id);
        const newer = !known ||
            change.revision > known.revision ||
            (change.revision === known.revision && kind === "expire" && known.presence.status !== "offline");
        if (!newer)
            return [];
        this.entries.set(change.user_id, { presence: change.presence, revision: change.revision });
        return [{ user_id: change.user_id, kind, presence: change.presence, revision: change.revision }];
    }
}
function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
}
