/** What the node tells, and what the client takes. */
/** A refused token (401/403), or an error the node sent. */
export class PresenceError extends Error {
    status;
    constructor(message, status) {
        super(message);
        this.status = status;
        this.name = "PresenceError";
    }
}
