/**
 * What a client knows of its watched users, by the rules that keep it right across reconnects:
 * a change applies only if its revision is newer than the view's (an expiry, at the revision it
 * expired, too); changes that arrive between a subscribe and its snapshot are held and applied
 * after it, if newer than what it showed; a snapshot replaces what it shows unless the view holds
 * a newer revision, and reports the differences as changes.
 */
import type { Change, ChangeKind, Presence } from "./types.js";

export interface WireChange {
  user_id: string;
  kind: string;
  presence: Presence;
  revision: number;
}

export class View {
  readonly entries = new Map<string, { presence: Presence; revision: number }>();
  private held: WireChange[] | null = null;

  /** A subscribe went out: changes wait for its snapshot. */
  subscribed(): void {
    this.held ??= [];
  }

  get awaiting(): boolean {
    return this.held !== null;
  }

  get(user: string): Presence | undefined {
    return this.entries.get(user)?.presence;
  }

  /** Keeps only the users still watched. */
  keep(watched: Set<string>): void {
    for (const user of this.entries.keys()) if (!watched.has(user)) this.entries.delete(user);
  }

  changes(changes: WireChange[]): Change[] {
    if (this.held) {
      this.held.push(...changes);
      return [];
    }
    return changes.flatMap((c) => this.apply(c));
  }

  snapshot(data: Record<string, Presence>, revisions: Record<string, number>): Change[] {
    const told: Change[] = [];
    for (const [user, presence] of Object.entries(data)) {
      const revision = revisions[user] ?? 0;
      const known = this.entries.get(user);
      if (known && known.revision > revision) continue;
      if (!known || !same(known.presence, presence)) {
        told.push({ user_id: user, kind: "snapshot", presence, revision });
      }
      this.entries.set(user, { presence, revision });
    }
    const held = this.held ?? [];
    this.held = null;
    for (const change of held) told.push(...this.apply(change));
    return told;
  }

  private apply(change: WireChange): Change[] {
    const kind: ChangeKind = change.kind === "expire" ? "expire" : change.kind === "erase" ? "erase" : "update";
    const known = this.entries.get(change.user_id);
    const newer =
      !known ||
      change.revision > known.revision ||
      (change.revision === known.revision && kind === "expire" && known.presence.status !== "offline");
    if (!newer) return [];
    this.entries.set(change.user_id, { presence: change.presence, revision: change.revision });
    return [{ user_id: change.user_id, kind, presence: change.presence, revision: change.revision }];
  }
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
