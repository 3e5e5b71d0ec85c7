-- The server name this database belongs to. Every user ID, room ID and event in it carries that
-- name, and a Matrix server can never change it: Axon records it on the first start and refuses
-- to start on the database with another `server_name` (a copied config, the wrong database).
CREATE TABLE server_identity (
    -- Always TRUE: the table holds one row.
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    server_name TEXT NOT NULL
);

-- A database from before this table: its name is the one in its user IDs (`@localpart:server_name`,
-- the server name being everything after the first colon, a port included). A database without
-- users takes the name of the next start.
INSERT INTO server_identity (id, server_name)
SELECT TRUE, substring(user_id FROM position(':' IN user_id) + 1)
FROM users
WHERE position(':' IN user_id) > 0
ORDER BY user_id
LIMIT 1;
