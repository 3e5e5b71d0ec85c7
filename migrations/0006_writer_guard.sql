-- The writer's optimistic path appends to rooms without locking them first: its one statement
-- moves each room's head only if the head is still the one the events were built on, and asserts
-- that every head moved. A failed assertion aborts the statement (NOTIFY included); the writer then
-- retries under the room locks.
CREATE FUNCTION axon_assert(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION USING ERRCODE = 'AX001', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;
