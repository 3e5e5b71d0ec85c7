#!/usr/bin/env python3
"""Sliding sync (MSC4186) latencies against a running homeserver, for a user with N rooms.

  first     a new connection's first response: one list over range 0-19, timeline_limit 1 and
            Element X's required_state (what a client waits for before it shows its room list);
  wakeup    a long poll (with the connection's pos) woken by a message another user sends into one
            of the rooms in the range: time from the send's acknowledgement to the poll's answer;
  memory    (with --connections C and --pid of the server) C connections of the user, each with a
            long poll waiting: the server's resident memory before and after, per connection.

Registration must be open (m.login.dummy). Standard library only. Run against a release build:

    python3 tests/sliding_sync_bench.py http://127.0.0.1:8008 --rooms 100 --wakes 200
"""

import argparse
import http.client
import json
import secrets
import statistics
import threading
import time
import urllib.parse

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
# matrix-rust-sdk's RoomListService list (0.18): Element X's room list.
REQUIRED_STATE = [
    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["org.matrix.msc3401.call.member", "*"],
    ["m.room.join_rules", ""], ["m.room.tombstone", ""], ["m.room.create", ""],
    ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
    ["m.space.parent", "*"], ["m.space.child", "*"], ["m.beacon_info", "*"],
]


class Client:
    def __init__(self, base: str, token: str | None = None):
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        self.token = token

    def request(self, method: str, path: str, body=None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else {})

    def ok(self, method: str, path: str, body=None) -> dict:
        status, data = self.request(method, path, body)
        if status != 200:
            raise SystemExit(f"{method} {path}: {status} {data}")
        return data


def register(base: str, name: str) -> Client:
    client = Client(base)
    body = {"username": name, "password": secrets.token_hex(8)}
    status, data = client.request("POST", "/_matrix/client/v3/register", body)
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": data.get("session")}
        data = client.ok("POST", "/_matrix/client/v3/register", body)
    elif status != 200:
        raise SystemExit(f"register: {status} {data}")
    client.token = data["access_token"]
    return client


def room_list_request(conn_id: str) -> dict:
    return {
        "conn_id": conn_id,
        "lists": {"all_rooms": {"ranges": [[0, 19]], "timeline_limit": 1,
                                "required_state": REQUIRED_STATE}},
        "extensions": {"account_data": {"enabled": True}, "typing": {"enabled": True},
                       "receipts": {"enabled": True, "rooms": ["*"]}},
    }


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def p(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (f"n={len(ordered)} p50={statistics.median(ordered):.2f} ms p90={p(0.9):.2f} ms "
            f"p99={p(0.99):.2f} ms max={ordered[-1]:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--firsts", type=int, default=50, help="first responses timed")
    ap.add_argument("--wakes", type=int, default=200, help="woken long polls timed")
    ap.add_argument("--connections", type=int, default=0, help="connections held open (memory)")
    ap.add_argument("--pid", type=int, help="the server's process ID (memory)")
    a = ap.parse_args()
    tag = secrets.token_hex(3)
    alice = register(a.base, f"ssbench_a_{tag}")
    bob = register(a.base, f"ssbench_b_{tag}")
    started = time.monotonic()
    rooms = []
    for i in range(a.rooms):
        room = alice.ok("POST", "/_matrix/client/v3/createRoom",
                        {"name": f"room {i}", "preset": "public_chat"})["room_id"]
        rooms.append(room)
    # Bob is in the ten newest: their messages keep them at the top of the list.
    targets = rooms[-10:]
    for room in targets:
        bob.ok("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}", {})
    print(f"setup: {a.rooms} rooms in {time.monotonic() - started:.1f} s")

    firsts = []
    for i in range(a.firsts):
        t0 = time.perf_counter()
        alice.ok("POST", PATH, room_list_request(f"first-{i}"))
        firsts.append((time.perf_counter() - t0) * 1000)
    print(f"first response (range 0-19, timeline_limit 1), {a.rooms} rooms: {percentiles(firsts)}")

    body = room_list_request("room-list")
    pos = alice.ok("POST", PATH, body)["pos"]
    poller = Client(a.base, alice.token)
    latencies, missed = [], 0
    for i in range(a.wakes):
        result = {}

        def poll():
            query = urllib.parse.urlencode({"pos": pos, "timeout": 30000})
            result["data"] = poller.ok("POST", f"{PATH}?{query}", body)
            result["at"] = time.perf_counter()

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.05)  # the poll is waiting
        room = targets[i % len(targets)]
        txn = f"w{i}-{tag}"
        bob.ok("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{txn}",
               {"msgtype": "m.text", "body": f"wake {i}"})
        acked = time.perf_counter()
        thread.join(35)
        data = result.get("data", {})
        events = data.get("rooms", {}).get(room, {}).get("timeline", [])
        if not any(e.get("content", {}).get("body") == f"wake {i}" for e in events):
            missed += 1
        else:
            latencies.append((result["at"] - acked) * 1000)
        pos = data.get("pos", pos)
    print(f"wake-up after the send's ack, {a.rooms} rooms: {percentiles(latencies)} missed={missed}")
    if a.connections and a.pid:
        memory(a, alice, bob, targets[-1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def memory(a, alice: Client, bob: Client, room: str) -> None:
    """C connections, each with its first response taken and a long poll waiting."""
    positions = []
    for i in range(a.connections):
        positions.append(alice.ok("POST", PATH, room_list_request(f"mem-{i}"))["pos"])
    time.sleep(2)
    before = rss_kib(a.pid)
    done = []

    def poll(i: int, pos: str) -> None:
        client = Client(a.base, alice.token)
        query = urllib.parse.urlencode({"pos": pos, "timeout": 60000})
        client.ok("POST", f"{PATH}?{query}", room_list_request(f"mem-{i}"))
        done.append(i)

    threads = [threading.Thread(target=poll, args=(i, p), daemon=True) for i, p in enumerate(positions)]
    for t in threads:
        t.start()
    time.sleep(max(5.0, a.connections / 100))
    waiting = rss_kib(a.pid)
    bob.ok("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/mem-{secrets.token_hex(3)}",
           {"msgtype": "m.text", "body": "wake everyone"})
    for t in threads:
        t.join(60)
    per = (waiting - before) * 1024 / a.connections
    print(f"memory: {a.connections} waiting connections, {a.rooms} rooms each: RSS {before / 1024:.1f} MiB "
          f"before, {waiting / 1024:.1f} MiB waiting: {per / 1024:.1f} KiB per connection "
          f"({len(done)} answered after one message)")


if __name__ == "__main__":
    main()
