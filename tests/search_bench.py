#!/usr/bin/env python3
"""Search benchmark (#18), not run by `cargo test` and not part of CI.

Fills a running Axon's database with N messages spread over R rooms (default 1,000,000 in 1,000)
through SQL (generate_series straight into `events` and `event_search`: minutes, not hours), then
times one-word searches through HTTP and prints p50/p90 per word, with the index size.

    cargo run --release   # or any Axon with open registration and its database reachable by psql
    tests/search_bench.py --url http://127.0.0.1:8008 --psql 'host=/path/to/socket dbname=axon user=axon'

The rooms are created through the API (so that membership, state and visibility are real); only
the messages are written by SQL. Message bodies are 8 words from a 20,000-word vocabulary with a
skewed (Zipf-like) distribution, so words of every frequency exist; each searched word is reported
with its number of matches. The searching user is joined to every room. Stdlib only.
"""

import argparse
import json
import statistics
import subprocess
import time
import urllib.request

VOCAB = 20000


def http(url, method="GET", body=None, token=None):
    req = urllib.request.Request(url, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def psql(conninfo, sql):
    out = subprocess.run(["psql", conninfo, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def word(k):
    """The k-th vocabulary word, as the SQL below spells it."""
    import hashlib
    h = hashlib.md5(str(k).encode()).hexdigest()[:7]
    return h.translate(str.maketrans("0123456789", "ghijklmnop"))


def fill(args, api, token, user_id):
    rooms = []
    for i in range(args.rooms):
        rooms.append(http(f"{api}/createRoom", "POST", {"name": f"bench room {i}"}, token)["room_id"])
        if i % 100 == 99:
            print(f"  {i + 1} rooms", flush=True)
    room_array = "ARRAY[" + ",".join(f"'{r}'" for r in rooms) + "]"
    started = time.time()
    # Bulk load: drop the GIN index and build it once at the end (much faster than row by row).
    psql(args.psql, f"""
        DROP INDEX IF EXISTS event_search_tsv;
        CREATE TEMP TABLE bench AS
            SELECT (SELECT position FROM stream_head) + i AS pos, i,
                   ({room_array})[1 + i % {len(rooms)}] AS room_id,
                   -- 8 words; word k is `word(k)` below. `WHERE i > 0` makes the subquery run per row.
                   (SELECT string_agg(translate(substr(md5(
                        floor(power(random(), 3) * {VOCAB})::int::text), 1, 7),
                        '0123456789', 'ghijklmnop'), ' ')
                    FROM generate_series(1, 8) j WHERE i > 0) AS body
            FROM generate_series(1, {args.messages}) i;
        INSERT INTO events (stream_ordering, event_id, room_id, event_type, sender, origin_server_ts,
                            depth, pdu, client_json)
            SELECT pos, '$bench' || i, room_id, 'm.room.message', '{user_id}', 1700000000000 + i, 10 + i,
                   '{{}}', json_build_object('type', 'm.room.message', 'room_id', room_id,
                       'sender', '{user_id}', 'event_id', '$bench' || i, 'origin_server_ts',
                       1700000000000 + i, 'content', json_build_object('msgtype', 'm.text', 'body', body))::text
            FROM bench;
        INSERT INTO event_search (stream_ordering, room_id, sender, event_type, key, tsv)
            SELECT pos, room_id, '{user_id}', 'm.room.message', 'content.body', to_tsvector('english', body)
            FROM bench;
        UPDATE stream_head SET position = (SELECT max(pos) FROM bench);
        CREATE INDEX event_search_tsv ON event_search USING GIN (tsv);
    """)
    psql(args.psql, "VACUUM ANALYZE event_search")
    psql(args.psql, "VACUUM ANALYZE events")
    print(f"filled {args.messages} messages in {time.time() - started:.0f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8008")
    p.add_argument("--psql", required=True, help="libpq conninfo of Axon's database")
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=30, help="searches per word")
    p.add_argument("--user", default="searchbench")
    args = p.parse_args()
    api = f"{args.url}/_matrix/client/v3"
    reg = http(f"{api}/register", "POST", {"username": args.user, "password": "bench password",
                                            "auth": {"type": "m.login.dummy"}})
    token, user_id = reg["access_token"], reg["user_id"]
    fill(args, api, token, user_id)
    print("index size:", psql(args.psql, "SELECT pg_size_pretty(pg_relation_size('event_search_tsv'))"),
          "| event_search table:", psql(args.psql, "SELECT pg_size_pretty(pg_table_size('event_search'))"),
          "| events table:", psql(args.psql, "SELECT pg_size_pretty(pg_table_size('events'))"))
    with open("/proc/loadavg") as f:
        print("load average before searching:", f.read().split()[:3])
    # Words from the rare end to the common end of the vocabulary.
    for k in (15000, 5000, 1000, 200, 50, 10, 1):
        for order in ("rank", "recent"):
            body = {"search_categories": {"room_events": {"search_term": word(k), "order_by": order}}}
            times, count = [], None
            for _ in range(args.runs):
                t = time.perf_counter()
                res = http(f"{api}/search", "POST", body, token)
                times.append((time.perf_counter() - t) * 1000)
                count = res["search_categories"]["room_events"]["count"]
            times.sort()
            print(f"word #{k:>5} ({count:>6} matches) {order:>6}: p50 {statistics.median(times):6.1f} ms, "
                  f"p90 {times[int(len(times) * 0.9)]:6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
