-- Erasure: users who deactivated their account with `erase: true`. Their events are served pruned
-- (the room version's redaction algorithm) to users who were not joined when they were sent; those
-- who were joined keep seeing them (synapse: `erased_users`, synapse/visibility.py). The table is
-- small, read whole into each process's memory, and only grows (a deactivated account never comes
-- back), so it needs no index beyond its key.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY REFERENCES users (user_id),
    -- When the user asked for erasure (ms since the epoch).
    erased_ts BIGINT NOT NULL
);
