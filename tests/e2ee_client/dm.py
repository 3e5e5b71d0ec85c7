#!/usr/bin/env python3
"""Two real Matrix clients (matrix-nio with its end-to-end encryption) establish an encrypted DM
through a homeserver and exchange a message each way.

What it exercises on the server: /keys/upload (device, one-time and fallback keys), /keys/query,
/keys/claim, /sendToDevice (Olm-encrypted Megolm room keys), /sync to_device, device_lists and
device_one_time_keys_count, m.room.encryption state and m.room.encrypted events.

Usage:  python dm.py http://127.0.0.1:8008        (registration must be open: m.login.dummy)
Exit status 0 when both messages arrive decrypted, 1 otherwise.
"""

import asyncio
import secrets
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
)

TIMEOUT_S = 60


async def make_client(homeserver: str, name: str, store: str) -> AsyncClient:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(homeserver, name, store_path=store, config=config)
    response = await client.register(name, "e2ee-test-password", device_name=f"{name}'s nio")
    if not isinstance(response, RegisterResponse):
        raise SystemExit(f"registering {name} failed: {response}")
    # The first sync uploads the device keys and one-time keys.
    await client.sync(timeout=1000, full_state=True)
    if client.should_upload_keys:
        await client.keys_upload()
    return client


async def wait_for_message(client: AsyncClient, room_id: str, body: str) -> bool:
    """Syncs until `body` arrives decrypted in `room_id`; False on timeout or an undecryptable event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while loop.time() < deadline:
        response = await client.sync(timeout=2000)
        joined = response.rooms.join.get(room_id) if hasattr(response, "rooms") else None
        for event in joined.timeline.events if joined else []:
            if isinstance(event, RoomMessageText) and event.body == body:
                print(f"{client.user_id} decrypted: {event.body!r} (encrypted: {event.decrypted})")
                return event.decrypted
            if isinstance(event, MegolmEvent):
                print(f"{client.user_id} could not decrypt {event.event_id}; waiting for the room key")
        if client.should_upload_keys:
            await client.keys_upload()
    return False


async def send(client: AsyncClient, room_id: str, body: str) -> None:
    # Fetch the other side's devices and establish Olm sessions before sending, as Element does.
    if client.should_query_keys:
        await client.keys_query()
    response = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        ignore_unverified_devices=True,
    )
    if not isinstance(response, RoomSendResponse):
        raise SystemExit(f"{client.user_id} could not send: {response}")


async def main(homeserver: str) -> int:
    suffix = secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as alice_store, tempfile.TemporaryDirectory() as bob_store:
        alice = await make_client(homeserver, f"alice{suffix}", alice_store)
        bob = await make_client(homeserver, f"bob{suffix}", bob_store)
        try:
            created = await alice.room_create(
                is_direct=True,
                invite=[bob.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
                ],
            )
            if not isinstance(created, RoomCreateResponse):
                raise SystemExit(f"creating the DM failed: {created}")
            room_id = created.room_id
            await bob.sync(timeout=1000)
            await bob.join(room_id)
            await alice.sync(timeout=1000)
            await bob.sync(timeout=1000)

            await send(alice, room_id, "hello bob, this is encrypted")
            ok_bob = await wait_for_message(bob, room_id, "hello bob, this is encrypted")
            await send(bob, room_id, "hello alice, encrypted back")
            ok_alice = await wait_for_message(alice, room_id, "hello alice, encrypted back")
        finally:
            await alice.close()
            await bob.close()
    print("PASS" if ok_bob and ok_alice else "FAIL")
    return 0 if ok_bob and ok_alice else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8008")))
