//! Two matrix-rust-sdk clients drive a homeserver's sliding sync the way Element X does
//! (`SyncService`, `RoomListService`, timelines), and check what a user would see: the room list
//! with names, unread counts and latest events; a message arriving live; a message sent; an
//! encrypted DM whose messages each side reads decrypted.
//!
//! Usage: `axon-sdk-client http://127.0.0.1:8008` (registration must be open: `m.login.dummy`).
//! Prints each step, then `PASS`; exits 1 with the step that failed otherwise.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, pin_mut};
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId, assign};
use matrix_sdk::{Client, Room, RoomState};
use matrix_sdk_ui::eyeball_im::Vector;
use matrix_sdk_ui::room_list_service::{RoomListItem, filters};
use matrix_sdk_ui::sync_service::SyncService;
use matrix_sdk_ui::timeline::{LatestEventValue, RoomExt, Timeline};

/// How long any one thing may take to show up.
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "sliding-sync-sdk-password";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .init();
    let homeserver = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8008".to_owned());
    match run(&homeserver).await {
        Ok(()) => {
            println!("PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A logged-in client with its sync service running, and the room list it sees.
struct User {
    client: Client,
    sync: SyncService,
    rooms: Arc<Mutex<Vector<RoomListItem>>>,
}

async fn run(homeserver: &str) -> Result<()> {
    let started = Instant::now();
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (alice_name, bob_name) = (format!("alice{suffix}"), format!("bob{suffix}"));
    register(homeserver, &alice_name).await?;
    register(homeserver, &bob_name).await?;
    let alice = login(homeserver, &alice_name).await?;
    let bob = login(homeserver, &bob_name).await?;
    let alice_id = alice.user_id().context("alice has no user ID")?.to_owned();
    let bob_id = bob.user_id().context("bob has no user ID")?.to_owned();
    step("registered and logged in", &started);

    // Before alice syncs: two rooms, the newer one with bob's messages (one mentioning her).
    create_room(&alice, "Quiet room", &[]).await?;
    let general = create_room(&alice, "General", &[bob_id.clone()]).await?;
    let bob_general = bob.join_room_by_id(&general).await?;
    for body in ["first from bob", "second from bob"] {
        bob_general
            .send(RoomMessageEventContent::text_plain(body))
            .await?;
    }
    let mention = RoomMessageEventContent::text_plain("alice, look at this")
        .add_mentions(Mentions::with_user_ids([alice_id.clone()]));
    bob_general.send(mention).await?;
    step("rooms created, bob sent 3 messages", &started);

    let alice = User::start(alice).await?;
    let bob = User::start(bob).await?;

    // The room list: both rooms, named, the one with news first, its unread counts from the
    // server, and its latest event.
    let listed = wait("alice's room list shows both rooms, General first", || {
        let names = alice.names();
        (names.len() >= 2 && names[0] == "General" && names.contains(&"Quiet room".to_owned()))
            .then_some(names)
    })
    .await
    .with_context(|| format!("alice's list: {:?}", alice.names()))?;
    println!("  alice's list: {listed:?}");
    let room = alice.room(&general)?;
    wait("General's unread counts: 3 notifications, 1 highlight", || {
        let counts = room.unread_notification_counts();
        (counts.notification_count == 3 && counts.highlight_count == 1).then_some(())
    })
    .await
    .with_context(|| format!("counts: {:?}", room.unread_notification_counts()))?;
    alice
        .client
        .latest_events()
        .await
        .listen_to_room(&general)
        .await?;
    wait_async("General's latest event is bob's last message", || async {
        latest_body(&room).await.filter(|b| b == "alice, look at this")
    })
    .await?;
    step("room list: names, order, unread counts, latest event", &started);

    // A message arriving live, in the open room (subscribed to, as a client does on opening).
    let alice_general = alice.open(&general).await?;
    let sent_at = Instant::now();
    bob_general
        .send(RoomMessageEventContent::text_plain("live from bob"))
        .await?;
    wait_async("alice receives bob's message live", || async {
        has_message(&alice_general, "live from bob").await.then_some(())
    })
    .await?;
    println!("  arrived {} ms after the send returned", sent_at.elapsed().as_millis());
    step("received live", &started);

    // A message sent from the timeline, as Element X sends, arriving at bob.
    let bob_timeline = bob.open(&general).await?;
    alice_general
        .send(RoomMessageEventContent::text_plain("hello from alice").into())
        .await?;
    wait_async("bob receives alice's message", || async {
        has_message(&bob_timeline, "hello from alice").await.then_some(())
    })
    .await?;
    step("sent", &started);

    // An encrypted DM: alice creates it, bob sees the invite in his list and joins, and each
    // reads the other's message decrypted.
    let dm = alice.client.create_dm(&bob_id).await?;
    let dm_id = dm.room_id().to_owned();
    let bob_dm = wait("bob's room list shows the DM invite", || {
        bob.listed(&dm_id)
            .filter(|r| r.state() == RoomState::Invited)
    })
    .await?;
    bob_dm.join().await?;
    let alice_dm = alice.room(&dm_id)?;
    wait("alice sees bob joined the DM", || {
        (alice_dm.joined_members_count() == 2).then_some(())
    })
    .await
    .with_context(|| format!("joined: {}", alice_dm.joined_members_count()))?;
    // m.direct is set by the SDK after createRoom returns, and reaches alice's room through the
    // account_data extension.
    wait_async("the DM is direct for alice", || async {
        alice_dm.is_direct().await.ok()?.then_some(())
    })
    .await?;
    if !alice_dm.latest_encryption_state().await?.is_encrypted() {
        bail!("the DM is not encrypted");
    }
    let alice_dm_timeline = alice.open(&dm_id).await?;
    let bob_dm_timeline = bob.open(&dm_id).await?;
    alice_dm_timeline
        .send(RoomMessageEventContent::text_plain("secret from alice").into())
        .await?;
    wait_async("bob decrypts alice's DM message", || async {
        has_message(&bob_dm_timeline, "secret from alice").await.then_some(())
    })
    .await?;
    bob_dm_timeline
        .send(RoomMessageEventContent::text_plain("secret from bob").into())
        .await?;
    wait_async("alice decrypts bob's DM message", || async {
        has_message(&alice_dm_timeline, "secret from bob").await.then_some(())
    })
    .await?;
    let bob_dm = bob.room(&dm_id)?;
    wait_async("the DM is direct for bob", || async {
        bob_dm.is_direct().await.ok()?.then_some(())
    })
    .await?;
    step("encrypted DM, both ways", &started);

    alice.sync.stop().await;
    bob.sync.stop().await;
    Ok(())
}

impl User {
    /// Starts the sync service and watches the "all rooms" list (rooms not left), as a room list
    /// screen does.
    async fn start(client: Client) -> Result<Self> {
        let sync = SyncService::builder(client.clone()).build().await?;
        sync.start().await;
        let list = sync.room_list_service().all_rooms().await?;
        let rooms = Arc::new(Mutex::new(Vector::new()));
        let out = rooms.clone();
        tokio::spawn(async move {
            let (stream, controller) = list.entries_with_dynamic_adapters(50);
            controller.set_filter(Box::new(filters::new_filter_non_left()));
            pin_mut!(stream);
            while let Some(diffs) = stream.next().await {
                let mut rooms = out.lock().unwrap();
                for diff in diffs {
                    diff.apply(&mut rooms);
                }
            }
        });
        Ok(Self {
            client,
            sync,
            rooms,
        })
    }

    /// The list's display names, in its order.
    fn names(&self) -> Vec<String> {
        self.rooms
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.cached_display_name().map(|n| n.to_string()).unwrap_or_default())
            .collect()
    }

    /// The room, if the list shows it.
    fn listed(&self, room_id: &RoomId) -> Option<Room> {
        self.rooms
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.room_id() == room_id)
            .map(|r| (**r).clone())
    }

    fn room(&self, room_id: &RoomId) -> Result<Room> {
        self.client
            .get_room(room_id)
            .with_context(|| format!("{room_id} is unknown to {:?}", self.client.user_id()))
    }

    /// Opens a room: subscribes to it and builds its timeline.
    async fn open(&self, room_id: &RoomId) -> Result<Timeline> {
        self.sync
            .room_list_service()
            .subscribe_to_rooms(&[room_id])
            .await;
        Ok(self.room(room_id)?.timeline().await?)
    }
}

async fn register(homeserver: &str, name: &str) -> Result<()> {
    let client = Client::builder().homeserver_url(homeserver).build().await?;
    let request = || {
        assign!(register::v3::Request::new(), {
            username: Some(name.to_owned()),
            password: Some(PASSWORD.to_owned()),
            inhibit_login: true,
        })
    };
    let Err(e) = client.matrix_auth().register(request()).await else {
        return Ok(());
    };
    let info = e
        .as_uiaa_response()
        .with_context(|| format!("registering {name}: {e}"))?;
    let dummy = assign!(uiaa::Dummy::new(), { session: info.session.clone() });
    client
        .matrix_auth()
        .register(assign!(request(), { auth: Some(uiaa::AuthData::Dummy(dummy)) }))
        .await
        .with_context(|| format!("registering {name}"))?;
    Ok(())
}

async fn login(homeserver: &str, name: &str) -> Result<Client> {
    let client = Client::builder().homeserver_url(homeserver).build().await?;
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(&format!("{name}'s sdk client"))
        .await
        .with_context(|| format!("logging in {name}"))?;
    Ok(client)
}

async fn create_room(client: &Client, name: &str, invite: &[OwnedUserId]) -> Result<OwnedRoomId> {
    let request = assign!(create_room::v3::Request::new(), {
        name: Some(name.to_owned()),
        invite: invite.to_vec(),
    });
    Ok(client.create_room(request).await?.room_id().to_owned())
}

/// The body of the room's latest event as the room list shows it, if it is a message.
async fn latest_body(room: &Room) -> Option<String> {
    match RoomExt::latest_event(room).await {
        LatestEventValue::Remote { content, .. } => {
            content.as_message().map(|m| m.body().to_owned())
        }
        _ => None,
    }
}

/// Whether the timeline shows a (decrypted) message with this body.
async fn has_message(timeline: &Timeline, body: &str) -> bool {
    timeline.items().await.iter().any(|item| {
        item.as_event()
            .and_then(|e| e.content().as_message())
            .is_some_and(|m| m.body() == body)
    })
}

/// Polls `check` until it gives a value, for at most `WAIT`.
async fn wait<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    wait_async(what, || std::future::ready(check())).await
}

async fn wait_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting until {what}", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step(what: &str, started: &Instant) {
    println!("ok ({:>5} ms): {what}", started.elapsed().as_millis());
}
