//! Federation: the published room directory across servers (`/_matrix/federation/v1/publicRooms`,
//! and the client's `/publicRooms?server=`).

use reqwest::Method;
use ruma::api::federation::directory::{
    get_public_rooms::v1 as get_list, get_public_rooms_filtered::v1 as filtered,
};
use ruma::directory::RoomNetwork;
use serde_json::{Value, json};

use crate::common::{TestApp, User, enc, spawn_federating};
use crate::federation_rooms::name;

async fn publish(user: &User, room_name: &str) -> String {
    user.post(
        "/_matrix/client/v3/createRoom",
        json!({"visibility": "public", "preset": "public_chat", "name": room_name}),
    )
    .await
    .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// A's alice published "Lobby" and "Garden" and kept a private room.
async fn two_published(a: &TestApp) -> User {
    let alice = a.register("alice").await;
    publish(&alice, "Lobby").await;
    publish(&alice, "Garden").await;
    alice
        .post("/_matrix/client/v3/createRoom", json!({"name": "Secret"}))
        .await
        .ok();
    alice
}

#[tokio::test]
async fn a_client_lists_another_servers_published_rooms_through_it() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    two_published(&a).await;
    let carol = b.register("carol").await;
    let server = enc(a.state.server_name.as_str());
    let list = carol
        .get(&format!("/_matrix/client/v3/publicRooms?server={server}"))
        .await
        .ok();
    assert_eq!(names(&list), ["Garden", "Lobby"], "{list}");
    assert_eq!(list["total_room_count_estimate"], 2);
    // A page at a time.
    let first = carol
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={server}&limit=1"
        ))
        .await
        .ok();
    assert_eq!(first["chunk"].as_array().unwrap().len(), 1, "{first}");
    let next = first["next_batch"].as_str().expect("a next page");
    let second = carol
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={server}&limit=1&since={}",
            enc(next)
        ))
        .await
        .ok();
    assert_ne!(first["chunk"][0]["room_id"], second["chunk"][0]["room_id"]);
    // Searched on A.
    let found = carol
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            json!({"filter": {"generic_search_term": "gard"}}),
        )
        .await
        .ok();
    assert_eq!(names(&found), ["Garden"], "{found}");
    // Only the default network has rooms.
    let bridged = carol
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            json!({"third_party_instance_id": "irc-libera"}),
        )
        .await
        .ok();
    assert_eq!(names(&bridged), Vec::<String>::new(), "{bridged}");
    let all = carol
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            json!({"include_all_networks": true}),
        )
        .await
        .ok();
    assert_eq!(names(&all), ["Garden", "Lobby"], "{all}");
}

#[tokio::test]
async fn the_federation_endpoint_serves_the_same_list() {
    let a = spawn_federating(|_| {}).await;
    let b = spawn_federating(|_| {}).await;
    two_published(&a).await;
    let answer = b
        .state
        .federation
        .send(&name(&a), get_list::Request::new())
        .await
        .unwrap();
    let mut listed: Vec<String> = answer.chunk.iter().filter_map(|r| r.name.clone()).collect();
    listed.sort();
    assert_eq!(listed, ["Garden", "Lobby"]);
    let mut request = filtered::Request::new();
    request.filter.generic_search_term = Some("lob".into());
    let answer = b.state.federation.send(&name(&a), request).await.unwrap();
    let listed: Vec<String> = answer.chunk.iter().filter_map(|r| r.name.clone()).collect();
    assert_eq!(listed, ["Lobby"]);
    let mut request = get_list::Request::new();
    request.room_network = RoomNetwork::ThirdParty("irc".into());
    let answer = b.state.federation.send(&name(&a), request).await.unwrap();
    assert!(answer.chunk.is_empty());
}

#[tokio::test]
async fn asking_another_servers_directory_fails_clearly() {
    let a = spawn_federating(|_| {}).await;
    let mut b = spawn_federating(|_| {}).await;
    let alice = a.register("alice").await;
    let server = enc(b.state.server_name.as_str());
    // Without a token: only this server's list.
    a.request(
        Method::GET,
        &format!("/_matrix/client/v3/publicRooms?server={server}"),
        None,
        None,
    )
    .await
    .expect_err(401, "M_MISSING_TOKEN");
    let local = a
        .request(Method::GET, "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert_eq!(local.status, 200);
    alice
        .get("/_matrix/client/v3/publicRooms?server=not%20a%20server")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={server}"),
            json!({"include_all_networks": true, "third_party_instance_id": "irc"}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    b.fed.as_mut().unwrap().stop().await;
    let down = alice
        .get(&format!("/_matrix/client/v3/publicRooms?server={server}"))
        .await;
    down.expect_err(502, "M_UNKNOWN");
    assert!(
        down.body["error"]
            .as_str()
            .unwrap()
            .contains(b.state.server_name.as_str()),
        "names the server: {}",
        down.body
    );
}
