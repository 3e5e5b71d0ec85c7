#!/usr/bin/env python3
"""Axon and the reference Synapse sharing rooms over federation, driven through both client APIs.

    interop.py --axon CLIENT_URL,SERVER_NAME --synapse CLIENT_URL,SERVER_NAME
               [--versions 10,12] [--timeout 30] [--no-dm]

Both servers must federate with each other on loopback and allow registration with m.login.dummy
(`run` beside this file starts them so). For each room version asked for:

  * a Synapse room: an Axon user joins it by alias (#name:synapse); the Synapse user raises the
    Axon user's power level; messages, a rename (m.room.name) and a redaction each way, every one
    seen in the other side's /sync; then display names, typing, read receipts, presence, two messages and
    two renames sent at once, a reaction and an edit each way, the Axon user leaving and joining
    again while the room changed, a second Axon user joining by room ID, a ban of them applied
    on their server, and a /messages reaching back before the first Axon user's join;
  * an Axon room: a Synapse user joins it by alias (#name:axon), a second one by room ID with
    server_name; then the same each way (the Synapse user leaves and joins again, an Axon user
    bans the second Synapse user);
  * unless --no-dm: a DM invite from each side (createRoom with is_direct and the other server's
    user invited) reaches the invitee with `is_direct: true` in the member event of
    `invite_state`; the invitee accepts it (on Axon through /rooms/{roomId}/join, on Synapse
    through /join/{roomIdOrAlias}) and answers.

Prints PASS/FAIL per step and exits 0 only if every step passed. Every wait is bounded by
--timeout seconds. Needs aiohttp (the venv Synapse's start.sh makes has it).
"""
import argparse
import asyncio
import secrets
import sys
import time
from urllib.parse import quote

import aiohttp

PASSWORD = "interop-password"


class StepFailed(Exception):
    pass


def q(s):
    """A path segment: room IDs, aliases and user IDs with every reserved character escaped."""
    return quote(s, safe="")


class Client:
    """One user on one server, with a /sync position of its own."""

    def __init__(self, session, url, server_name, localpart, timeout):
        self.s, self.url, self.server_name = session, url, server_name
        self.localpart, self.timeout = localpart, timeout
        self.user_id = f"@{localpart}:{server_name}"
        self.token = None
        self.since = None

    async def req(self, method, path, body=None, ok=(200,), **params):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.s.request(method, self.url + path, json=body, params=params or None,
                                  headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=self.timeout + 15)) as r:
            try:
                data = await r.json(content_type=None)
            except Exception:
                data = {"raw": (await r.text())[:500]}
            if r.status not in ok:
                raise StepFailed(f"{self.user_id}: {method} {path} -> {r.status} {data}")
            return r.status, data

    async def register(self):
        st, d = await self.req("POST", "/_matrix/client/v3/register",
                               {"username": self.localpart, "password": PASSWORD,
                                "auth": {"type": "m.login.dummy"}}, ok=(200, 400))
        if st == 400:
            if d.get("errcode") != "M_USER_IN_USE":
                raise StepFailed(f"register {self.user_id}: {d}")
            st, d = await self.req("POST", "/_matrix/client/v3/login",
                                   {"type": "m.login.password", "password": PASSWORD,
                                    "identifier": {"type": "m.id.user", "user": self.localpart}})
        if d["user_id"] != self.user_id:
            raise StepFailed(f"registered {d['user_id']}, expected {self.user_id}")
        self.token = d["access_token"]

    async def sync(self, timeout_ms):
        params = {"timeout": str(int(timeout_ms))}
        if self.since:
            params["since"] = self.since
        _, d = await self.req("GET", "/_matrix/client/v3/sync", **params)
        self.since = d["next_batch"]
        return d

    async def mark(self):
        """Moves the sync position to now, so that a wait sees only what follows."""
        await self.sync(0)

    async def wait(self, pred, what):
        """Syncs until pred(response) answers something truthy, which is returned."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"{self.user_id}: no {what} after {self.timeout:.0f}s")
            found = pred(await self.sync(min(5000, max(0, left - 0.5) * 1000)))
            if found:
                return found

    async def create_room(self, **body):
        _, d = await self.req("POST", "/_matrix/client/v3/createRoom", body)
        return d["room_id"]

    async def join(self, room, server_name=None):
        params = {"server_name": server_name} if server_name else {}
        _, d = await self.req("POST", f"/_matrix/client/v3/join/{q(room)}", {}, **params)
        return d["room_id"]

    async def send(self, room, body):
        txn = secrets.token_hex(8)
        _, d = await self.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/{txn}",
                              {"msgtype": "m.text", "body": body})
        return d["event_id"]

    async def put_state(self, room, event_type, content, state_key=""):
        _, d = await self.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/state/{event_type}/"
                                     f"{q(state_key)}", content)
        return d["event_id"]

    async def get_state(self, room, event_type, state_key=""):
        _, d = await self.req("GET", f"/_matrix/client/v3/rooms/{q(room)}/state/{event_type}/"
                                     f"{q(state_key)}")
        return d

    async def redact(self, room, event_id):
        txn = secrets.token_hex(8)
        _, d = await self.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/redact/{q(event_id)}/{txn}",
                              {"reason": "interop test"})
        return d["event_id"]

    async def typing(self, room, typing=True):
        await self.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/typing/{q(self.user_id)}",
                       {"typing": typing, "timeout": 30000} if typing else {"typing": False})

    async def receipt(self, room, event_id):
        await self.req("POST", f"/_matrix/client/v3/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {})

    async def leave(self, room):
        await self.req("POST", f"/_matrix/client/v3/rooms/{q(room)}/leave", {})

    async def set_displayname(self, name):
        await self.req("PUT", f"/_matrix/client/v3/profile/{q(self.user_id)}/displayname",
                       {"displayname": name})

    async def messages(self, room, limit=50):
        _, d = await self.req("GET", f"/_matrix/client/v3/rooms/{q(room)}/messages", dir="b",
                              limit=str(limit))
        return d.get("chunk", [])

    async def event(self, room, event_id):
        _, d = await self.req("GET", f"/_matrix/client/v3/rooms/{q(room)}/event/{q(event_id)}")
        return d


async def done(coro):
    """Awaits a step that has nothing to report."""
    await coro
    return ""


# ------------------------------------------------------------------ what a /sync shows

def joined_events(sync, room):
    r = sync.get("rooms", {}).get("join", {}).get(room, {})
    return r.get("timeline", {}).get("events", []) + r.get("state", {}).get("events", [])


def sees(room, pred):
    return lambda s: next((e for e in joined_events(s, room) if pred(e)), None)


def message(room, sender, body):
    return sees(room, lambda e: e.get("type") == "m.room.message" and e.get("sender") == sender
                and e.get("content", {}).get("body") == body)


def membership(room, user, value):
    return sees(room, lambda e: e.get("type") == "m.room.member" and e.get("state_key") == user
                and e.get("content", {}).get("membership") == value)


def state_event(room, event_type, sender, key, value):
    return sees(room, lambda e: e.get("type") == event_type and e.get("sender") == sender
                and e.get("state_key") == "" and e.get("content", {}).get(key) == value)


def redaction(room, sender, redacted):
    def is_it(e):
        # v11 and later carry `redacts` in the content; servers also copy it to the top level.
        target = e.get("redacts") or e.get("content", {}).get("redacts")
        return e.get("type") == "m.room.redaction" and e.get("sender") == sender and target == redacted
    return sees(room, is_it)


def ephemeral(room, pred):
    def find(s):
        r = s.get("rooms", {}).get("join", {}).get(room, {})
        return next((e for e in r.get("ephemeral", {}).get("events", []) if pred(e)), None)
    return find


def typing_of(room, user):
    return ephemeral(room, lambda e: e.get("type") == "m.typing"
                     and user in e.get("content", {}).get("user_ids", []))


def receipt_of(room, user, event_id):
    return ephemeral(room, lambda e: e.get("type") == "m.receipt"
                     and user in e.get("content", {}).get(event_id, {}).get("m.read", {}))


def invite_member_event(room, user):
    """The invitee's member event in `rooms.invite[room].invite_state`."""
    def pred(s):
        inv = s.get("rooms", {}).get("invite", {}).get(room)
        if not inv:
            return None
        for e in inv.get("invite_state", {}).get("events", []):
            if e.get("type") == "m.room.member" and e.get("state_key") == user:
                return e
        raise StepFailed(f"the invite to {room} has no member event for {user}: {inv}")
    return pred


# ------------------------------------------------------------------ the scenario

class Scenario:
    def __init__(self, args, session):
        self.args = args
        self.tag = secrets.token_hex(3)
        a_url, a_name = args.axon.split(",")
        s_url, s_name = args.synapse.split(",")
        self.axon_name, self.synapse_name = a_name, s_name
        mk = lambda url, name, local: Client(session, url.rstrip("/"), name, local, args.timeout)
        # bob and dave live on Axon; alice and carol on Synapse.
        self.bob = mk(a_url, a_name, f"bob-{self.tag}")
        self.alice = mk(s_url, s_name, f"alice-{self.tag}")
        self.carol = mk(s_url, s_name, f"carol-{self.tag}")
        self.dave = mk(a_url, a_name, f"dave-{self.tag}")
        self.results = []

    async def step(self, desc, fn):
        t0 = time.monotonic()
        try:
            detail = await fn()
            print(f"PASS  {desc} ({time.monotonic() - t0:.1f}s){': ' + detail if detail else ''}")
            self.results.append(True)
            return True
        except Exception as e:  # StepFailed, aiohttp errors, timeouts, unexpected JSON
            print(f"FAIL  {desc} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}")
            self.results.append(False)
            return False
        finally:
            sys.stdout.flush()

    async def steps(self, prefix, steps):
        """Runs steps in order; after a failure the rest of the list is reported skipped."""
        for i, (desc, fn) in enumerate(steps):
            if not await self.step(f"{prefix}{desc}", fn):
                for rest, _ in steps[i + 1:]:
                    print(f"SKIP  {prefix}{rest}: an earlier step failed")
                    self.results.append(False)
                return False
        return True

    # ---- shared pieces: one side acts, the other sees it in /sync

    async def message_seen(self, room, sender, readers, body):
        for r in readers:
            await r.mark()
        await sender.send(room, body)
        for r in readers:
            await r.wait(message(room, sender.user_id, body), f"message {body!r} from {sender.user_id}")
        return f"seen by {', '.join(r.user_id for r in readers)}"

    async def rename_seen(self, room, sender, readers, name):
        for r in readers:
            await r.mark()
        await sender.put_state(room, "m.room.name", {"name": name})
        for r in readers:
            await r.wait(state_event(room, "m.room.name", sender.user_id, "name", name),
                         f"rename to {name!r} by {sender.user_id}")
            got = await r.get_state(room, "m.room.name")
            if got.get("name") != name:
                raise StepFailed(f"{r.user_id}'s server has the name {got}, expected {name!r}")
        return f"name {name!r} in every /sync and state"

    async def redaction_seen(self, room, sender, readers, body):
        event_id = await sender.send(room, body)
        for r in readers:
            await r.wait(message(room, sender.user_id, body), f"message {body!r} to redact")
            await r.mark()
        await sender.redact(room, event_id)
        for r in readers:
            await r.wait(redaction(room, sender.user_id, event_id), f"redaction of {event_id}")
            ev = await r.event(room, event_id)
            if ev.get("content"):
                raise StepFailed(f"{r.user_id}'s server still serves the content of {event_id}: {ev}")
        return f"{event_id} redacted everywhere"

    async def grant_power(self, room, granter, grantee, readers, level=50):
        pl = await granter.get_state(room, "m.room.power_levels")
        pl.setdefault("users", {})[grantee.user_id] = level
        for r in readers:
            await r.mark()
        await granter.put_state(room, "m.room.power_levels", pl)
        for r in readers:
            await r.wait(sees(room, lambda e: e.get("type") == "m.room.power_levels"
                              and e.get("content", {}).get("users", {}).get(grantee.user_id) == level),
                         f"power level {level} for {grantee.user_id}")
        return f"{grantee.user_id} has power {level} on both servers"

    async def typing_seen(self, room, sender, reader):
        await reader.mark()
        await sender.typing(room)
        await reader.wait(typing_of(room, sender.user_id), f"typing notice of {sender.user_id}")
        await sender.typing(room, False)
        return f"{reader.user_id} sees {sender.user_id} typing"

    async def receipt_seen(self, room, sender, reader):
        event_id = await reader.send(room, f"read me {secrets.token_hex(2)}")
        await sender.wait(sees(room, lambda e: e.get("event_id") == event_id), "the message to receipt")
        await reader.mark()
        await sender.receipt(room, event_id)
        await reader.wait(receipt_of(room, sender.user_id, event_id), f"read receipt of {sender.user_id}")
        return f"{reader.user_id} sees {sender.user_id}'s receipt"

    async def presence_seen(self, member, reader):
        """The member's presence and status message, set on their server, read on the reader's."""
        msg = f"busy {secrets.token_hex(2)}"
        await member.req("PUT", f"/_matrix/client/v3/presence/{q(member.user_id)}/status",
                         {"presence": "unavailable", "status_msg": msg})
        deadline = time.monotonic() + reader.timeout
        while True:
            _, d = await reader.req("GET", f"/_matrix/client/v3/presence/{q(member.user_id)}/status")
            if d.get("presence") == "unavailable" and d.get("status_msg") == msg:
                return f"{reader.server_name} has {member.user_id} unavailable, {msg!r}"
            if time.monotonic() > deadline:
                raise StepFailed(f"{reader.user_id}'s server has {member.user_id}'s presence {d}")
            await asyncio.sleep(0.3)

    async def profile_seen(self, room, member, reader):
        """The member's display name, in the member event the reader's server has and in a profile
        query across servers."""
        ev = await reader.get_state(room, "m.room.member", member.user_id)
        want = member.localpart.title()
        if ev.get("displayname") != want:
            raise StepFailed(f"{reader.user_id}'s server has {member.user_id}'s member event {ev}")
        _, prof = await reader.req("GET", f"/_matrix/client/v3/profile/{q(member.user_id)}")
        if prof.get("displayname") != want:
            raise StepFailed(f"profile of {member.user_id} through {reader.server_name}: {prof}")
        return f"displayname {want!r}"

    async def history_seen(self, room, reader, body):
        """The reader paginates back and finds a message from before they joined."""
        chunk = await reader.messages(room)
        if not any(e.get("content", {}).get("body") == body for e in chunk):
            kinds = [e.get("type") for e in chunk]
            raise StepFailed(f"{reader.user_id}'s /messages has no {body!r}: {kinds}")
        return f"{len(chunk)} events back, the early message among them"

    async def leave_and_rejoin(self, room, member, readers, via):
        for r in readers:
            await r.mark()
        await member.leave(room)
        for r in readers:
            await r.wait(membership(room, member.user_id, "leave"), f"the leave of {member.user_id}")
        # While the member is away, the room changes: their server must learn of it on the rejoin.
        name = f"renamed while away {secrets.token_hex(2)}"
        await readers[0].put_state(room, "m.room.name", {"name": name})
        await readers[0].send(room, f"said while away {secrets.token_hex(2)}")
        await member.join(room, server_name=via)
        for r in readers:
            await r.wait(membership(room, member.user_id, "join"), f"the rejoin of {member.user_id}")
        # A resident server may get the rename after the rejoin; a server that joins again must
        # have it from the join's answer.
        deadline = time.monotonic() + member.timeout
        while (got := await member.get_state(room, "m.room.name")).get("name") != name:
            if time.monotonic() > deadline:
                raise StepFailed(f"after the rejoin {member.user_id}'s server has the name {got}, "
                                 f"expected {name!r}")
            await asyncio.sleep(0.2)
        body = f"back again {secrets.token_hex(2)}"
        await self.message_seen(room, readers[0], [member], body)
        return "left, rejoined and receives messages again"

    async def concurrent_renames(self, room, a, b):
        """Both rename the room at once: the servers must settle on the same name."""
        na, nb = f"name from a {secrets.token_hex(2)}", f"name from b {secrets.token_hex(2)}"
        await asyncio.gather(a.put_state(room, "m.room.name", {"name": na}),
                             b.put_state(room, "m.room.name", {"name": nb}))
        # Both renames reach both servers; then a message from each settles the room's graph.
        await self.message_seen(room, a, [b], f"after the renames {secrets.token_hex(2)}")
        await self.message_seen(room, b, [a], f"after the renames {secrets.token_hex(2)}")
        deadline = time.monotonic() + a.timeout
        while True:
            ga = (await a.get_state(room, "m.room.name")).get("name")
            gb = (await b.get_state(room, "m.room.name")).get("name")
            if ga == gb:
                return f"both settled on {ga!r}"
            if time.monotonic() > deadline:
                raise StepFailed(f"{a.server_name} says {ga!r}, {b.server_name} says {gb!r}")
            await asyncio.sleep(0.2)

    async def relations_seen(self, room, sender, reader):
        """An edit (m.replace) and a reaction (m.annotation) of the reader's message, by the sender:
        the reader's server lists both among the message's relations."""
        original = await reader.send(room, f"to be reacted to {secrets.token_hex(2)}")
        await sender.wait(sees(room, lambda e: e.get("event_id") == original), "the message to relate to")
        _, d = await sender.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.reaction/"
                                       f"{secrets.token_hex(8)}",
                                {"m.relates_to": {"rel_type": "m.annotation", "event_id": original,
                                                  "key": "+1"}})
        reaction = d["event_id"]
        own = await sender.send(room, f"mine {secrets.token_hex(2)}")
        _, d = await sender.req("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/"
                                       f"{secrets.token_hex(8)}",
                                {"msgtype": "m.text", "body": "* edited",
                                 "m.new_content": {"msgtype": "m.text", "body": "edited"},
                                 "m.relates_to": {"rel_type": "m.replace", "event_id": own}})
        edit = d["event_id"]
        for target, rel in ((original, reaction), (own, edit)):
            deadline = time.monotonic() + reader.timeout
            while True:
                # 404 until the reader's server has the related-to event.
                _, d = await reader.req("GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(target)}",
                                        ok=(200, 404))
                if any(e.get("event_id") == rel for e in d.get("chunk", [])):
                    break
                if time.monotonic() > deadline:
                    raise StepFailed(f"{reader.user_id}'s server has no relation {rel} of {target}: {d}")
                await asyncio.sleep(0.2)
        return "a reaction and an edit listed by the reader's server"

    async def displayname_change_seen(self, room, member, reader):
        await reader.mark()
        new = f"{member.localpart.title()} Renamed"
        await member.set_displayname(new)
        await reader.wait(sees(room, lambda e: e.get("type") == "m.room.member"
                               and e.get("state_key") == member.user_id
                               and e.get("content", {}).get("displayname") == new),
                          f"the new display name of {member.user_id}")
        await member.set_displayname(member.localpart.title())
        return f"{reader.user_id} sees {new!r}"

    async def ban_applied(self, room, admin, target):
        """The admin bans the target, whose server applies it (the room moves to the target's
        `rooms.leave` with the ban); then unbans."""
        await target.mark()
        await admin.req("POST", f"/_matrix/client/v3/rooms/{q(room)}/ban",
                        {"user_id": target.user_id, "reason": "interop test"})

        def banned(s):
            r = s.get("rooms", {}).get("leave", {}).get(room, {})
            events = r.get("timeline", {}).get("events", []) + r.get("state", {}).get("events", [])
            return any(e.get("type") == "m.room.member" and e.get("state_key") == target.user_id
                       and e.get("content", {}).get("membership") == "ban" for e in events)
        await target.wait(banned, "the ban in rooms.leave")
        await admin.req("POST", f"/_matrix/client/v3/rooms/{q(room)}/unban", {"user_id": target.user_id})
        return f"{target.user_id}'s server has the ban"

    async def concurrent_messages(self, room, a, b):
        """Both send at once (a fork in the room's graph); both see both, and the room goes on."""
        ba, bb = f"at once from a {secrets.token_hex(2)}", f"at once from b {secrets.token_hex(2)}"
        await a.mark()
        await b.mark()
        await asyncio.gather(a.send(room, ba), b.send(room, bb))
        await a.wait(message(room, b.user_id, bb), "the other side's concurrent message")
        await b.wait(message(room, a.user_id, ba), "the other side's concurrent message")
        await self.message_seen(room, a, [b], f"after the fork {secrets.token_hex(2)}")
        await self.message_seen(room, b, [a], f"after the fork {secrets.token_hex(2)}")
        return "both messages seen on both sides, and the next ones"

    # ---- the parts

    async def synapse_room(self, version):
        alice, bob = self.alice, self.bob
        st = {}
        local = f"syn-v{version}-{self.tag}"
        alias = f"#{local}:{self.synapse_name}"

        async def create():
            st["room"] = await alice.create_room(preset="public_chat", room_alias_name=local,
                                                 room_version=version, name=f"synapse v{version}")
            return f"{alias} -> {st['room']}"

        async def join():
            await alice.mark()
            room = await bob.join(alias)
            if room != st["room"]:
                raise StepFailed(f"joined {room}, expected {st['room']}")
            await alice.wait(membership(room, bob.user_id, "join"), "the Axon user's join")
            return "alice sees bob's join"

        async def dave_joins():
            await alice.mark()
            room = await self.dave.join(st["room"], server_name=self.synapse_name)
            if room != st["room"]:
                raise StepFailed(f"joined {room}, expected {st['room']}")
            await alice.wait(membership(room, self.dave.user_id, "join"), "dave's join")
            return "alice sees dave's join"

        r = lambda: st["room"]
        early = f"before bob came {self.tag}"
        return await self.steps(f"[v{version} Synapse room] ", [
            ("alice (Synapse) creates a public room with an alias", create),
            ("alice sends a message before anyone else joins",
             lambda: done(alice.send(r(), early))),
            ("bob (Axon) joins it by alias", join),
            ("message Synapse -> Axon",
             lambda: self.message_seen(r(), alice, [bob], f"hello bob {self.tag}")),
            ("message Axon -> Synapse",
             lambda: self.message_seen(r(), bob, [alice], f"hello alice {self.tag}")),
            ("alice raises bob's power level", lambda: self.grant_power(r(), alice, bob, [bob])),
            ("rename by Synapse", lambda: self.rename_seen(r(), alice, [bob], f"alice's name {self.tag}")),
            ("rename by Axon", lambda: self.rename_seen(r(), bob, [alice], f"bob's name {self.tag}")),
            ("redaction by Synapse",
             lambda: self.redaction_seen(r(), alice, [bob], f"alice regrets {self.tag}")),
            ("redaction by Axon",
             lambda: self.redaction_seen(r(), bob, [alice], f"bob regrets {self.tag}")),
        ]) and await self.steps(f"[v{version} Synapse room, more] ", [
            ("Synapse has bob's display name", lambda: self.profile_seen(r(), bob, alice)),
            ("Axon has alice's display name", lambda: self.profile_seen(r(), alice, bob)),
            ("typing Axon -> Synapse", lambda: self.typing_seen(r(), bob, alice)),
            ("typing Synapse -> Axon", lambda: self.typing_seen(r(), alice, bob)),
            ("read receipt Axon -> Synapse", lambda: self.receipt_seen(r(), bob, alice)),
            ("read receipt Synapse -> Axon", lambda: self.receipt_seen(r(), alice, bob)),
            ("presence Axon -> Synapse", lambda: self.presence_seen(bob, alice)),
            ("presence Synapse -> Axon", lambda: self.presence_seen(alice, bob)),
            ("concurrent messages", lambda: self.concurrent_messages(r(), alice, bob)),
            ("concurrent renames", lambda: self.concurrent_renames(r(), alice, bob)),
            ("reaction and edit Axon -> Synapse", lambda: self.relations_seen(r(), bob, alice)),
            ("reaction and edit Synapse -> Axon", lambda: self.relations_seen(r(), alice, bob)),
            ("Synapse sees bob's new display name", lambda: self.displayname_change_seen(r(), bob, alice)),
            ("bob leaves and rejoins by ID", lambda: self.leave_and_rejoin(r(), bob, [alice], self.synapse_name)),
            ("dave (Axon) joins by room ID with server_name", dave_joins),
            ("alice (Synapse) bans dave (Axon)", lambda: self.ban_applied(r(), alice, self.dave)),
            ("bob's /messages reaches back before his join", lambda: self.history_seen(r(), bob, early)),
        ])

    async def axon_room(self, version):
        alice, bob, carol = self.alice, self.bob, self.carol
        st = {}
        local = f"axon-v{version}-{self.tag}"
        alias = f"#{local}:{self.axon_name}"

        async def create():
            st["room"] = await bob.create_room(preset="public_chat", room_alias_name=local,
                                               room_version=version, name=f"axon v{version}")
            return f"{alias} -> {st['room']}"

        async def join_alias():
            await bob.mark()
            room = await alice.join(alias)
            if room != st["room"]:
                raise StepFailed(f"joined {room}, expected {st['room']}")
            await bob.wait(membership(room, alice.user_id, "join"), "the Synapse user's join")
            return "bob sees alice's join"

        async def join_id():
            await bob.mark()
            await alice.mark()
            room = await carol.join(st["room"], server_name=self.axon_name)
            if room != st["room"]:
                raise StepFailed(f"joined {room}, expected {st['room']}")
            await bob.wait(membership(room, carol.user_id, "join"), "carol's join")
            await alice.wait(membership(room, carol.user_id, "join"), "carol's join")
            return "bob and alice see carol's join"

        r = lambda: st["room"]
        early = f"before alice came {self.tag}"
        return await self.steps(f"[v{version} Axon room] ", [
            ("bob (Axon) creates a public room with an alias", create),
            ("bob sends a message before anyone else joins", lambda: done(bob.send(r(), early))),
            ("alice (Synapse) joins it by alias", join_alias),
            ("carol (Synapse) joins it by room ID with server_name", join_id),
            ("message Axon -> Synapse",
             lambda: self.message_seen(r(), bob, [alice, carol], f"hi all {self.tag}")),
            ("message Synapse -> Axon",
             lambda: self.message_seen(r(), alice, [bob], f"hi bob {self.tag}")),
            ("bob raises alice's power level", lambda: self.grant_power(r(), bob, alice, [alice])),
            ("rename by Axon", lambda: self.rename_seen(r(), bob, [alice], f"bob's room {self.tag}")),
            ("rename by Synapse", lambda: self.rename_seen(r(), alice, [bob], f"alice's room {self.tag}")),
            ("redaction by Axon",
             lambda: self.redaction_seen(r(), bob, [alice], f"bob takes back {self.tag}")),
            ("redaction by Synapse",
             lambda: self.redaction_seen(r(), alice, [bob], f"alice takes back {self.tag}")),
        ]) and await self.steps(f"[v{version} Axon room, more] ", [
            ("Synapse has bob's display name", lambda: self.profile_seen(r(), bob, alice)),
            ("Axon has alice's display name", lambda: self.profile_seen(r(), alice, bob)),
            ("typing Axon -> Synapse", lambda: self.typing_seen(r(), bob, alice)),
            ("typing Synapse -> Axon", lambda: self.typing_seen(r(), alice, bob)),
            ("read receipt Axon -> Synapse", lambda: self.receipt_seen(r(), bob, alice)),
            ("read receipt Synapse -> Axon", lambda: self.receipt_seen(r(), alice, bob)),
            ("concurrent messages", lambda: self.concurrent_messages(r(), bob, alice)),
            ("concurrent renames", lambda: self.concurrent_renames(r(), bob, alice)),
            ("reaction and edit Axon -> Synapse", lambda: self.relations_seen(r(), bob, alice)),
            ("reaction and edit Synapse -> Axon", lambda: self.relations_seen(r(), alice, bob)),
            ("Axon sees alice's new display name", lambda: self.displayname_change_seen(r(), alice, bob)),
            ("bob (Axon) bans carol (Synapse)", lambda: self.ban_applied(r(), bob, carol)),
            ("alice leaves and rejoins", lambda: self.leave_and_rejoin(r(), alice, [bob], self.axon_name)),
            ("alice's /messages reaches back before her join", lambda: self.history_seen(r(), alice, early)),
        ])

    async def dm(self, inviter, invitee, version):
        st = {}
        side = "Axon" if inviter is self.bob else "Synapse"

        async def invite():
            await invitee.mark()
            st["room"] = await inviter.create_room(preset="trusted_private_chat", is_direct=True,
                                                   invite=[invitee.user_id], room_version=version)
            ev = await invitee.wait(invite_member_event(st["room"], invitee.user_id), "the DM invite")
            c = ev.get("content", {})
            if c.get("membership") != "invite" or c.get("is_direct") is not True:
                raise StepFailed(f"the invite's member event has content {c}")
            return f"{st['room']}: is_direct: true"

        async def join():
            await inviter.mark()
            # Both ways of accepting: /rooms/{roomId}/join on Axon, /join/{roomIdOrAlias} on Synapse.
            if invitee is self.bob:
                _, d = await invitee.req("POST", f"/_matrix/client/v3/rooms/{q(st['room'])}/join", {})
                room = d["room_id"]
            else:
                room = await invitee.join(st["room"])
            if room != st["room"]:
                raise StepFailed(f"joined {room}, expected {st['room']}")
            await inviter.wait(membership(room, invitee.user_id, "join"), "the invitee's join")
            return f"{inviter.user_id} sees the join"

        return await self.steps(f"[v{version} DM from {side}] ", [
            (f"{inviter.user_id} invites {invitee.user_id} with is_direct", invite),
            ("the invitee accepts", join),
            ("message back", lambda: self.message_seen(st["room"], invitee, [inviter], f"dm {self.tag}")),
        ])

    async def rejected_invite(self, inviter, invitee, version):
        """An invite the invitee rejects: the inviter's server sees the leave."""
        await invitee.mark()
        room = await inviter.create_room(preset="private_chat", invite=[invitee.user_id],
                                         room_version=version)
        await invitee.wait(invite_member_event(room, invitee.user_id), "the invite")
        await inviter.mark()
        await invitee.leave(room)
        await inviter.wait(membership(room, invitee.user_id, "leave"), "the rejection")
        return f"{inviter.user_id} sees {invitee.user_id} reject the invite"

    async def directory_seen(self, publisher, reader):
        """A room published in the publisher's directory is listed by the reader's server
        (`/publicRooms?server=`)."""
        local = f"listed-{secrets.token_hex(3)}"
        room = await publisher.create_room(preset="public_chat", visibility="public",
                                           room_alias_name=local, name=f"listed {local}")
        deadline = time.monotonic() + reader.timeout
        while True:
            _, d = await reader.req("POST", "/_matrix/client/v3/publicRooms",
                                    {"limit": 50, "filter": {"generic_search_term": local}},
                                    server=publisher.server_name)
            if any(c.get("room_id") == room for c in d.get("chunk", [])):
                return f"{reader.server_name} lists {room} of {publisher.server_name}"
            if time.monotonic() > deadline:
                raise StepFailed(f"{reader.user_id}'s server does not list {room}: {d}")
            await asyncio.sleep(0.5)

    async def run(self):
        print(f"Axon {self.axon_name}, Synapse {self.synapse_name}, run tag {self.tag}")

        async def register():
            users = (self.bob, self.dave, self.alice, self.carol)
            for c in users:
                await c.register()
                await c.set_displayname(c.localpart.title())
            return ", ".join(c.user_id for c in users)

        if not await self.step("register bob and dave on Axon, alice and carol on Synapse", register):
            return False
        for v in self.args.versions.split(","):
            await self.synapse_room(v)
            await self.axon_room(v)
            if self.args.dm:
                await self.dm(self.bob, self.alice, v)
                await self.dm(self.alice, self.bob, v)
                await self.steps(f"[v{v} invites] ", [
                    ("a Synapse user rejects an Axon invite",
                     lambda: self.rejected_invite(self.bob, self.carol, v)),
                    ("an Axon user rejects a Synapse invite",
                     lambda: self.rejected_invite(self.alice, self.dave, v)),
                ])
        # Only this way: Synapse 1.163 lets only its admins publish rooms to its directory (its
        # default room_list_publication_rules), so it lists none of alice's.
        await self.steps("[directory] ", [
            ("Synapse lists Axon's public rooms", lambda: self.directory_seen(self.bob, self.alice)),
        ])
        if not self.args.dm:
            print("SKIP  DM invites across servers (--no-dm)")
        ok = all(self.results)
        print(f"{'PASS' if ok else 'FAIL'}  Synapse interop: {sum(self.results)}/{len(self.results)} steps passed")
        return ok


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--axon", required=True, help="CLIENT_URL,SERVER_NAME of Axon")
    ap.add_argument("--synapse", required=True, help="CLIENT_URL,SERVER_NAME of Synapse")
    ap.add_argument("--versions", default="10,12", help="room versions, comma-separated (10,12)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds per wait (30)")
    ap.add_argument("--dm", action=argparse.BooleanOptionalAction, default=True,
                    help="the DM invites across servers (on; --no-dm leaves them out)")
    args = ap.parse_args()
    async with aiohttp.ClientSession() as session:
        ok = await Scenario(args, session).run()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
