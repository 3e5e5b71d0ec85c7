-- The server name this database belongs to. Every user ID, room ID and event in it carries that
-- name, and a Matrix server can never change it: Axon records it on the first start and refuses
-- to start on the database with another `server_name` (a copied config, the wrong database).
CREATE TABLE server_identity (
    -- Always TRUE: the table holds one row.
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    server_name TEXT NOT NULL
);
