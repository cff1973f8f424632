/** The REST call the client makes: the token's user's status, written at the first node that answers. */
import { PresenceError } from "./types.js";
/** Writes `body` as the status of `token`'s user, at the first of `nodes` that answers. */
export async function putStatus(nodes, token, body) {
    const user = subject(token);
    let last = null;
    for (const base of nodes) {
        let response;
        try {
            response = await fetch(`${base}/api/v2/presence/${encodeURIComponent(user)}`, {
                method: "PUT",
                headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
                body: JSON.stringify(body),
            });
        }
        catch (e) {
            last = e;
            continue;
        }
        const answer = (await response.json().catch(() => ({})));
        if (!response.ok)
            throw new PresenceError(answer.error ?? `the node answered ${response.status}`, response.status);
        return answer.data[user];
    }
    throw new PresenceError(`no node answered: ${String(last)}`);
}
/** The `sub` of a JWT (the node checks it; this only names the path). */
function subject(token) {
    const payload = token.split(".")[1] ?? "";
    const text = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const sub = JSON.parse(text).sub;
    if (!sub)
        throw new PresenceError("the token names no user (`sub`)");
    return sub;
}
