-- Guest accounts (POST /register?kind=guest, issue #18) are marked by users.is_guest and get
-- numeric localparts, as in Synapse; this sequence hands the numbers out. Ordinary registration
-- refuses all-numeric names, so only a name taken before that rule can collide: guest registration
-- then takes the next number.
CREATE SEQUENCE guest_localparts;
