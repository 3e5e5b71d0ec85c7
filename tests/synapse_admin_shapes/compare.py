#!/usr/bin/env python3
"""Compares the shapes of Axon's answers to Synapse's admin API (`/_synapse/admin/...`) with the
answers of a reference Synapse, endpoint by endpoint, after the same steps on both servers.

A shape is an answer's structure, not its values: the status code, the errcode of an error, and
the JSON with every scalar replaced by its type (`string`, `int`, `bool`, `null`, `float`), every
list by the merged shape of its items. Two shapes agree when their status and errcode are equal,
objects have the same keys, and types are equal where neither side is `null` (a value that is null
on one server and set on the other depends on the data, e.g. a room without a name).

    python3 tests/synapse_admin_shapes/compare.py                  # compare, exit 1 on a difference
    python3 tests/synapse_admin_shapes/compare.py --write-fixture  # also record Synapse's shapes

The Synapse is the one answering at --synapse (default http://127.0.0.1:8118, started with
../shared/tools/synapse/start.sh); its admin is made with register_new_matrix_user from
--synapse-base's venv. Axon is started here from --axon-bin (default target/debug/axon) with a
private cluster in a temporary directory, unless --axon names a running one (then --axon-data-dir
must be the data directory it runs on, for `axon user create --admin`).

`--write-fixture` writes tests/synapse_admin_shapes/synapse.json: Synapse's shape per step, which
the integration test `admin_shapes` checks Axon's answers against on every `cargo test`, so a drift
is caught without a Synapse.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURE = os.path.join(HERE, "synapse.json")
A = "/_synapse/admin"


def enc(s):
    return urllib.parse.quote(s, safe="")


# ------------------------------------------------------------------------------------------ shapes
# Keys whose values are the clients' (event content) or cryptographic: not the admin API's shape.
OPAQUE = {"content", "signatures", "hashes", "prev_content"}


def shape(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        merged = None
        for item in value:
            merged = merge(merged, shape(item))
        return [] if merged is None else [merged]
    return {k: "object" if k in OPAQUE else shape(v) for k, v in sorted(value.items())}


def merge(a, b):
    """One shape for two items of a list: objects get the union of their keys."""
    if a is None or a == "null":
        return b
    if b == "null":
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out.get(k), v)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if not a:
            return b
        if not b:
            return a
        return [merge(a[0], b[0])]
    return a


def differences(want, got, path="$"):
    """Where `got` (Axon's shape) departs from `want` (Synapse's)."""
    if want == "null" or got == "null":
        return []
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) - set(got)):
            out.append(f"{path}.{k}: missing (Synapse: {json.dumps(want[k])})")
        for k in sorted(set(got) - set(want)):
            out.append(f"{path}.{k}: not in Synapse's answer")
        for k in sorted(set(want) & set(got)):
            out.extend(differences(want[k], got[k], f"{path}.{k}"))
        return out
    if isinstance(want, list) and isinstance(got, list):
        if not want or not got:
            return []
        return differences(want[0], got[0], f"{path}[]")
    if want != got:
        return [f"{path}: {json.dumps(got)}, Synapse {json.dumps(want)}"]
    return []


def compare(want, got):
    out = []
    if want["status"] != got["status"]:
        out.append(f"status {got['status']}, Synapse {want['status']}")
    if want.get("errcode") != got.get("errcode"):
        out.append(f"errcode {got.get('errcode')}, Synapse {want.get('errcode')}")
    if not out:
        out.extend(differences(want["shape"], got["shape"]))
    return out


# ------------------------------------------------------------------------------------------ HTTP
class Server:
    def __init__(self, base, name):
        self.base = base.rstrip("/")
        self.name = name
        self.results = {}
        # Values of this run shown as placeholders in the recorded requests.
        self.placeholders = {}

    def call(self, method, path, body=None, token=None, raw=None, content_type=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type or "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = text.decode(errors="replace")
        return status, value

    def record(self, step, method, path, body=None, token=None):
        """Calls the endpoint and records its shape under `step`; returns the answer's JSON."""
        status, value = self.call(method, path, body, token)
        shown = path.split("?")[0]
        for seen, placeholder in self.placeholders.items():
            shown = shown.replace(seen, placeholder)
        entry = {"request": f"{method} {shown}", "status": status}
        if status >= 400 and isinstance(value, dict):
            entry["errcode"] = value.get("errcode")
        entry["shape"] = shape(value)
        self.results[step] = entry
        return status, value

    def register(self, localpart, password):
        status, value = self.call(
            "POST",
            "/_matrix/client/v3/register",
            {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}},
        )
        if status != 200:
            raise SystemExit(f"{self.name}: registering {localpart}: {status} {value}")
        return value["access_token"], value["user_id"]

    def login(self, user_id, password, device_id=None):
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        }
        if device_id:
            body["device_id"] = device_id
        status, value = self.call("POST", "/_matrix/client/v3/login", body)
        if status != 200:
            raise SystemExit(f"{self.name}: login {user_id}: {status} {value}")
        return value["access_token"]


def wait_until(url, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2):
                return True
        except Exception:
            time.sleep(0.5)
    return False


# ------------------------------------------------------------------------------------------ the steps
def scenario(s, admin_token, server_name, run):
    """The same admin API calls on either server. Step names are the fixture's keys."""
    t = admin_token
    alice_id = f"@shape{run}alice:{server_name}"
    bob_id = f"@shape{run}bob:{server_name}"
    carol_id = f"@shape{run}carol:{server_name}"
    ghost = enc(f"@shape{run}nobody:{server_name}")
    pw = "correct horse battery staple"
    s.placeholders[run] = ""

    s.record("server_version", "GET", f"{A}/v1/server_version", token=t)
    s.record("no_token", "GET", f"{A}/v2/users")

    # Users: create, modify, query, list.
    s.record("user_create", "PUT", f"{A}/v2/users/{enc(alice_id)}",
             {"password": pw, "displayname": "Alice"}, token=t)
    s.record("user_modify", "PUT", f"{A}/v2/users/{enc(alice_id)}",
             {"displayname": "Alice A."}, token=t)
    s.record("user_create_bob", "PUT", f"{A}/v2/users/{enc(bob_id)}",
             {"password": pw, "displayname": "Bob"}, token=t)
    s.call("PUT", f"{A}/v2/users/{enc(carol_id)}", {"password": pw}, token=t)
    alice = s.login(alice_id, pw, "ALICEDEV")
    bob = s.login(bob_id, pw)
    s.record("non_admin", "GET", f"{A}/v2/users", token=bob)
    s.record("user_query", "GET", f"{A}/v2/users/{enc(alice_id)}", token=t)
    s.record("user_query_unknown", "GET", f"{A}/v2/users/{ghost}", token=t)
    s.record("user_query_remote", "GET", f"{A}/v2/users/{enc('@x:elsewhere.example')}", token=t)
    s.record("users_list", "GET", f"{A}/v2/users?limit=1&name=shape{run}", token=t)
    s.record("users_list_last_page", "GET", f"{A}/v2/users?from=2&limit=5&name=shape{run}", token=t)
    s.record("users_list_bad_dir", "GET", f"{A}/v2/users?dir=x", token=t)
    s.record("users_list_bad_limit", "GET", f"{A}/v2/users?limit=-1", token=t)
    s.record("users_list_bad_order", "GET", f"{A}/v2/users?order_by=password", token=t)
    s.record("whois", "GET", f"{A}/v1/whois/{enc(alice_id)}", token=t)

    # Devices.
    s.record("devices", "GET", f"{A}/v2/users/{enc(alice_id)}/devices", token=t)
    s.record("device", "GET", f"{A}/v2/users/{enc(alice_id)}/devices/ALICEDEV", token=t)
    s.record("device_unknown", "GET", f"{A}/v2/users/{enc(alice_id)}/devices/NOPE", token=t)
    s.record("device_rename", "PUT", f"{A}/v2/users/{enc(alice_id)}/devices/ALICEDEV",
             {"display_name": "phone"}, token=t)
    s.login(alice_id, pw, "SPARE1")
    s.login(alice_id, pw, "SPARE2")
    s.record("device_delete", "DELETE", f"{A}/v2/users/{enc(alice_id)}/devices/SPARE1", token=t)
    s.record("devices_delete", "POST", f"{A}/v2/users/{enc(alice_id)}/delete_devices",
             {"devices": ["SPARE2"]}, token=t)

    # Rooms.
    _, room = s.call("POST", "/_matrix/client/v3/createRoom",
                     {"name": f"Shapes{run}", "topic": "t", "preset": "public_chat",
                      "room_alias_name": f"shape{run}"}, token=alice)
    room_id = room["room_id"]
    s.call("POST", "/_matrix/client/v3/createRoom", {"name": f"Shapes{run} two"}, token=alice)
    r = enc(room_id)
    s.placeholders[r] = "{room_id}"
    s.call("POST", f"/_matrix/client/v3/join/{r}", {}, token=bob)
    event_ids = []
    for i in range(3):
        _, sent = s.call("PUT", f"/_matrix/client/v3/rooms/{r}/send/m.room.message/t{i}",
                         {"msgtype": "m.text", "body": f"hello {i}"}, token=alice)
        event_ids.append(sent["event_id"])
    s.record("joined_rooms", "GET", f"{A}/v1/users/{enc(alice_id)}/joined_rooms", token=t)
    s.record("joined_rooms_unknown", "GET", f"{A}/v1/users/{ghost}/joined_rooms", token=t)
    s.record("rooms_list", "GET", f"{A}/v1/rooms?limit=1&search_term=Shapes{run}", token=t)
    s.record("rooms_list_all", "GET", f"{A}/v1/rooms?order_by=joined_members&dir=b", token=t)
    s.record("rooms_list_bad_order", "GET", f"{A}/v1/rooms?order_by=nonsense", token=t)
    s.record("room_details", "GET", f"{A}/v1/rooms/{r}", token=t)
    s.record("room_details_unknown", "GET", f"{A}/v1/rooms/{enc('!nope:' + server_name)}", token=t)
    s.record("room_members", "GET", f"{A}/v1/rooms/{r}/members", token=t)
    s.record("room_state", "GET", f"{A}/v1/rooms/{r}/state", token=t)
    s.record("make_room_admin", "POST", f"{A}/v1/rooms/{r}/make_room_admin",
             {"user_id": bob_id}, token=t)

    # Event reports.
    s.call("POST", f"/_matrix/client/v3/rooms/{r}/report/{enc(event_ids[0])}",
           {"reason": "spam", "score": -100}, token=bob)
    _, reports = s.record("event_reports", "GET", f"{A}/v1/event_reports?limit=1&room_id={r}", token=t)
    report_id = reports["event_reports"][0]["id"] if reports.get("event_reports") else 0
    s.placeholders[f"event_reports/{report_id}"] = "event_reports/{report_id}"
    s.record("event_report", "GET", f"{A}/v1/event_reports/{report_id}", token=t)
    s.record("event_report_unknown", "GET", f"{A}/v1/event_reports/99999999", token=t)
    s.record("event_report_bad_id", "GET", f"{A}/v1/event_reports/abc", token=t)
    s.record("event_report_delete", "DELETE", f"{A}/v1/event_reports/{report_id}", token=t)

    # Media.
    status, up = s.call("POST", "/_matrix/media/v3/upload?filename=a.txt", raw=b"hello media",
                        token=alice, content_type="text/plain")
    media_id = up["content_uri"].rsplit("/", 1)[1] if status == 200 else "x"
    s.placeholders[media_id] = "{media_id}"
    s.call("POST", "/_matrix/media/v3/upload?filename=b.txt", raw=b"more media",
           token=alice, content_type="text/plain")
    s.record("user_media", "GET", f"{A}/v1/users/{enc(alice_id)}/media?limit=1", token=t)
    s.record("media_quarantine", "POST", f"{A}/v1/media/quarantine/{server_name}/{media_id}",
             {}, token=t)
    s.record("media_unquarantine", "POST", f"{A}/v1/media/unquarantine/{server_name}/{media_id}",
             {}, token=t)
    s.record("media_delete", "DELETE", f"{A}/v1/media/{server_name}/{media_id}", token=t)
    s.record("media_delete_unknown", "DELETE", f"{A}/v1/media/{server_name}/nosuchmedia", token=t)
    s.record("media_delete_old_1970", "POST", f"{A}/v1/media/delete?before_ts=1000", {}, token=t)
    s.record("media_delete_old", "POST",
             f"{A}/v1/media/delete?before_ts={int(time.time() * 1000) - 86_400_000}", {}, token=t)
    s.record("media_delete_old_no_ts", "POST", f"{A}/v1/media/delete", {}, token=t)
    s.record("user_media_delete", "DELETE", f"{A}/v1/users/{enc(alice_id)}/media", token=t)

    # Registration tokens.
    name = f"shape{run}tok"
    s.record("token_new", "POST", f"{A}/v1/registration_tokens/new",
             {"token": name, "uses_allowed": 3}, token=t)
    s.record("token_new_bad", "POST", f"{A}/v1/registration_tokens/new",
             {"uses_allowed": "x"}, token=t)
    s.record("token_list", "GET", f"{A}/v1/registration_tokens", token=t)
    s.record("token_get", "GET", f"{A}/v1/registration_tokens/{name}", token=t)
    s.record("token_update", "PUT", f"{A}/v1/registration_tokens/{name}",
             {"expiry_time": 4102444800000}, token=t)
    s.record("token_delete", "DELETE", f"{A}/v1/registration_tokens/{name}", token=t)
    s.record("token_unknown", "GET", f"{A}/v1/registration_tokens/{name}", token=t)

    # Server notices are off on both (the reference Synapse's config has none): the error compares.
    # Their success answer, {"event_id": ...}, is checked by tests/admin_api.rs.
    s.record("server_notice", "POST", f"{A}/v1/send_server_notice",
             {"user_id": bob_id, "content": {"msgtype": "m.text", "body": "hi"}}, token=t)
    s.record("server_notice_txn", "PUT", f"{A}/v1/send_server_notice/shape{run}",
             {"user_id": bob_id, "content": {"msgtype": "m.text", "body": "hi"}}, token=t)

    # Shadow ban, login as, password reset.
    s.record("shadow_ban", "POST", f"{A}/v1/users/{enc(carol_id)}/shadow_ban", token=t)
    s.record("shadow_ban_lift", "DELETE", f"{A}/v1/users/{enc(carol_id)}/shadow_ban", token=t)
    s.record("login_as", "POST", f"{A}/v1/users/{enc(carol_id)}/login", {}, token=t)
    s.record("login_as_unknown", "POST", f"{A}/v1/users/{ghost}/login", {}, token=t)
    s.record("reset_password", "POST", f"{A}/v1/reset_password/{enc(carol_id)}",
             {"new_password": pw + "!", "logout_devices": False}, token=t)

    # History purge, then room deletion.
    _, purge = s.record("purge_history", "POST", f"{A}/v1/purge_history/{r}",
                        {"purge_up_to_event_id": event_ids[1]}, token=t)
    s.placeholders[purge.get("purge_id", "x")] = "{purge_id}"
    time.sleep(1)
    s.record("purge_status", "GET", f"{A}/v1/purge_history_status/{purge.get('purge_id', 'x')}",
             token=t)
    s.record("purge_status_unknown", "GET", f"{A}/v1/purge_history_status/nosuchpurge", token=t)
    s.record("purge_history_no_point", "POST", f"{A}/v1/purge_history/{r}", {}, token=t)
    _, deletion = s.record("room_delete", "DELETE", f"{A}/v2/rooms/{r}",
                           {"block": True, "purge": True}, token=t)
    delete_id = deletion.get("delete_id", "x")
    s.placeholders[delete_id] = "{delete_id}"
    for _ in range(60):
        _, st = s.call("GET", f"{A}/v2/rooms/delete_status/{delete_id}", token=t)
        if not isinstance(st, dict) or st.get("status") not in ("scheduled", "active", "purging",
                                                                "shutting_down"):
            break
        time.sleep(0.5)
    s.record("room_delete_status", "GET", f"{A}/v2/rooms/delete_status/{delete_id}", token=t)
    s.record("room_delete_status_of_room", "GET", f"{A}/v2/rooms/{r}/delete_status", token=t)
    s.record("room_delete_status_unknown", "GET", f"{A}/v2/rooms/delete_status/nosuchdelete",
             token=t)

    # Deactivation last: it ends alice's sessions.
    s.record("deactivate", "POST", f"{A}/v1/deactivate/{enc(alice_id)}", {"erase": False}, token=t)
    s.record("user_query_deactivated", "GET", f"{A}/v2/users/{enc(alice_id)}", token=t)


# ------------------------------------------------------------------------------------------ servers
def synapse_admin(args, synapse):
    """An admin's token on the Synapse: log in as `admin`, else create it."""
    password = "admin-shapes-password"
    status, value = synapse.call("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "shapesadmin"},
        "password": password})
    if status == 200:
        return value["access_token"]
    tool = os.path.join(args.synapse_base, "venv/bin/register_new_matrix_user")
    conf = os.path.join(args.synapse_base, "homeserver.yaml")
    subprocess.run([tool, "-c", conf, "-a", "-u", "shapesadmin", "-p", password, synapse.base],
                   check=True, stdout=subprocess.DEVNULL)
    return synapse.login("@shapesadmin:localhost", password)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


AXON_CONFIG = """
[admin]
allow_login_as = true
[rate_limits]
enabled = false
"""


def start_axon(args, work):
    port = free_port()
    data = os.path.join(work, "data")
    conf = os.path.join(work, "axon.toml")
    with open(conf, "w") as f:
        f.write(AXON_CONFIG)
    env = dict(os.environ, AXON_DATA_DIR=data, AXON_LISTEN_PORT=str(port), AXON_CONFIG=conf)
    log = open(os.path.join(work, "axon.log"), "w")
    proc = subprocess.Popen([args.axon_bin], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    if not wait_until(url, 120):
        proc.terminate()
        raise SystemExit(f"Axon did not start; see {work}/axon.log")
    return proc, url, env


def axon_admin(args, axon, env):
    password = "admin-shapes-password"
    pwfile = os.path.join(env["AXON_DATA_DIR"], "..", "pw")
    with open(pwfile, "w") as f:
        f.write(password)
    subprocess.run([args.axon_bin, "user", "create", "shapesadmin", "--admin", "--password-file",
                    pwfile], env=env, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return axon.login("@shapesadmin:localhost", password)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synapse", default=os.environ.get("SYNAPSE_URL", "http://127.0.0.1:8118"))
    p.add_argument("--synapse-base", default=os.environ.get("SYNAPSE_BASE", "/tmp/synapse-a"))
    p.add_argument("--axon", help="a running Axon's URL (else one is started)")
    p.add_argument("--axon-data-dir", help="the running Axon's data directory")
    p.add_argument("--axon-bin", default=os.path.join(ROOT, "target/debug/axon"))
    p.add_argument("--write-fixture", action="store_true")
    args = p.parse_args()

    run = secrets.token_hex(3)
    synapse = Server(args.synapse, "Synapse")
    if not wait_until(synapse.base, 5):
        raise SystemExit(f"no Synapse answers at {synapse.base} (../shared/tools/synapse/start.sh)")
    scenario(synapse, synapse_admin(args, synapse), "localhost", run)

    work = tempfile.mkdtemp(prefix="axon-shapes-")
    os.chmod(work, 0o755)
    proc = None
    try:
        if args.axon:
            axon = Server(args.axon, "Axon")
            env = dict(os.environ, AXON_DATA_DIR=args.axon_data_dir or "data")
        else:
            proc, url, env = start_axon(args, work)
            axon = Server(url, "Axon")
        scenario(axon, axon_admin(args, axon, env), "localhost", run)
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)
            shutil.rmtree(work, ignore_errors=True)

    failures = 0
    for step, want in synapse.results.items():
        got = axon.results.get(step)
        diffs = ["not called"] if got is None else compare(want, got)
        print(f"{'ok  ' if not diffs else 'DIFF'} {step:32} {want['request']}")
        for d in diffs:
            print(f"       {d}")
        failures += bool(diffs)
    print(f"{len(synapse.results) - failures} passed, {failures} failed")
    if args.write_fixture:
        with open(FIXTURE, "w") as f:
            json.dump(synapse.results, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {FIXTURE}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
