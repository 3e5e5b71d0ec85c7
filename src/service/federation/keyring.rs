//! Other servers' signing keys: read from PostgreSQL while valid, otherwise fetched — through the
//! configured notaries first, then from the server itself, as Synapse orders its key fetchers —,
//! verified (the server's own signature by one of its verify keys; the notary's signature by the
//! notary's key) and stored with their validity. Concurrent lookups of one server wait for one fetch.
//! Also the notary side: the stored answers countersigned for `/_matrix/key/v2/query`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ruma::api::federation::discovery::{
    ServerSigningKeys, get_remote_server_keys_batch::v2 as batch, get_server_keys::v2 as direct,
};
use ruma::serde::{Base64, Raw};
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, OwnedServerSigningKeyId, ServerName,
};
use sqlx::PgPool;

use super::client::FederationClient;
use crate::config::TrustedKeyServer;
use crate::store::server_keys::RemoteKeyRow;
use crate::{Error, Result, store};

/// Keys are trusted for at most this long past the fetch, whatever `valid_until_ts` says (the
/// spec's rule for room versions 5 and later).
const MAX_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A notary from `federation.trusted_key_servers`.
struct Notary {
    name: OwnedServerName,
    /// Its keys as configured; none: fetched from it.
    keys: Option<BTreeMap<String, Base64>>,
}

/// Public keys by key ID (`ed25519:abc`), as ruma's verifiers take them.
pub type KeySet = BTreeMap<String, Base64>;

pub struct KeyRing {
    db: PgPool,
    client: Arc<FederationClient>,
    notaries: Vec<Notary>,
    /// One fetch per server at a time; entries leave when their fetch ends.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyRing {
    pub fn new(db: PgPool, client: Arc<FederationClient>, trusted: &[TrustedKeyServer]) -> Self {
        let notaries = trusted
            .iter()
            .filter_map(|t| {
                Some(Notary {
                    name: OwnedServerName::try_from(t.server_name.as_str()).ok()?,
                    keys: t.verify_keys.as_ref().map(|keys| {
                        keys.iter()
                            .filter_map(|(id, key)| Some((id.clone(), Base64::parse(key).ok()?)))
                            .collect()
                    }),
                })
            })
            .collect();
        Self {
            db,
            client,
            notaries,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// `server`'s keys among `key_ids` that are valid at `at_ts`: current keys whose
    /// `valid_until_ts` is not past, and old keys that expired after it. Fetches what is missing;
    /// returns what it has (possibly nothing) when no one can give the rest.
    pub async fn keys_valid_at(
        &self,
        server: &ServerName,
        key_ids: &[String],
        at_ts: i64,
    ) -> Result<KeySet> {
        if server == self.client.origin() {
            return self.own(key_ids, at_ts).await;
        }
        let cached = self.cached(server, key_ids, at_ts).await?;
        if cached.len() == key_ids.len() {
            return Ok(cached);
        }
        let lock = self.fetch_lock(server);
        let result = async {
            let _turn = lock.lock().await;
            // Another lookup may have fetched them meanwhile.
            let cached = self.cached(server, key_ids, at_ts).await?;
            if cached.len() == key_ids.len() {
                return Ok(cached);
            }
            for notary in &self.notaries {
                if notary.name == server {
                    continue;
                }
                if let Err(e) = self.fetch_via_notary(notary, server, key_ids, at_ts).await {
                    tracing::info!(%server, notary = %notary.name, error = %e, "key query through a notary failed");
                }
                let cached = self.cached(server, key_ids, at_ts).await?;
                if cached.len() == key_ids.len() {
                    return Ok(cached);
                }
            }
            if let Err(e) = self.fetch_direct(server).await {
                tracing::info!(%server, error = %e, "fetching server keys failed");
            }
            self.cached(server, key_ids, at_ts).await
        }
        .await;
        self.release_fetch_lock(server, lock);
        result
    }

    fn fetch_lock(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        fetching.entry(server.to_owned()).or_default().clone()
    }

    fn release_fetch_lock(&self, server: &ServerName, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        drop(lock);
        // Only the map holds it now: no one else is waiting.
        if fetching
            .get(server)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            fetching.remove(server);
        }
    }

    /// This server's own keys among `key_ids` valid at `at_ts` (its events come back to it in
    /// other servers' answers: a room's state on joining it again, say).
    async fn own(&self, key_ids: &[String], at_ts: i64) -> Result<KeySet> {
        let rows = store::server_keys::own_keys(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|r| (format!("ed25519:{}", r.key_version), r))
            .filter(|(id, r)| key_ids.contains(id) && r.expired_ts.is_none_or(|e| e > at_ts))
            .filter_map(|(id, r)| Some((id, Base64::parse(&r.public_key).ok()?)))
            .collect())
    }

    async fn cached(&self, server: &ServerName, key_ids: &[String], at_ts: i64) -> Result<KeySet> {
        let rows = store::server_keys::remote_keys(&self.db, server.as_str()).await?;
        Ok(rows
            .into_iter()
            .filter(|r| key_ids.contains(&r.key_id))
            .filter(|r| match r.expired_ts {
                None => r.valid_until_ts >= at_ts,
                Some(expired) => expired > at_ts,
            })
            .filter_map(|r| Some((r.key_id, Base64::parse(&r.public_key).ok()?)))
            .collect())
    }

    /// Asks `server` for its keys and stores them once verified.
    pub async fn fetch_direct(&self, server: &ServerName) -> Result<()> {
        let fetched = async {
            let response = self
                .client
                .send_unsigned(server, direct::Request::new())
                .await?;
            self.accept(server, &response.server_key, None).await
        }
        .await;
        count_fetch("direct", &fetched);
        fetched
    }

    async fn fetch_via_notary(
        &self,
        notary: &Notary,
        server: &ServerName,
        key_ids: &[String],
        at_ts: i64,
    ) -> Result<()> {
        let fetched = self.ask_notary(notary, server, key_ids, at_ts).await;
        count_fetch("notary", &fetched);
        fetched
    }

    async fn ask_notary(
        &self,
        notary: &Notary,
        server: &ServerName,
        key_ids: &[String],
        at_ts: i64,
    ) -> Result<()> {
        let notary_keys = match &notary.keys {
            Some(keys) => keys.clone(),
            None => self.notary_keys(&notary.name).await?,
        };
        let mut criteria = BTreeMap::new();
        for id in key_ids {
            let Ok(id) = OwnedServerSigningKeyId::try_from(id.as_str()) else {
                continue;
            };
            let mut c = batch::QueryCriteria::new();
            c.minimum_valid_until_ts = Some(ruma::MilliSecondsSinceUnixEpoch(
                ruma::UInt::try_from(at_ts.max(0)).unwrap_or_default(),
            ));
            criteria.insert(id, c);
        }
        let request = batch::Request::new(BTreeMap::from([(server.to_owned(), criteria)]));
        let response = self.client.send_unsigned(&notary.name, request).await?;
        for raw in &response.server_keys {
            self.accept(server, raw, Some((&notary.name, &notary_keys)))
                .await?;
        }
        Ok(())
    }

    /// A notary's own current keys, fetched from it directly when not cached.
    async fn notary_keys(&self, notary: &ServerName) -> Result<KeySet> {
        let now = store::now_ms();
        let current = |rows: Vec<RemoteKeyRow>| -> KeySet {
            rows.into_iter()
                .filter(|r| r.expired_ts.is_none() && r.valid_until_ts >= now)
                .filter_map(|r| Some((r.key_id, Base64::parse(&r.public_key).ok()?)))
                .collect()
        };
        let keys = current(store::server_keys::remote_keys(&self.db, notary.as_str()).await?);
        if !keys.is_empty() {
            return Ok(keys);
        }
        self.fetch_direct(notary).await?;
        Ok(current(
            store::server_keys::remote_keys(&self.db, notary.as_str()).await?,
        ))
    }

    /// Verifies a key answer for `server` (and the notary's signature when one relayed it) and
    /// stores its keys.
    async fn accept(
        &self,
        server: &ServerName,
        raw: &Raw<ServerSigningKeys>,
        notary: Option<(&ServerName, &KeySet)>,
    ) -> Result<()> {
        let keys: ServerSigningKeys = raw
            .deserialize()
            .map_err(|e| Error::remote(format!("{server}: malformed key answer: {e}")))?;
        if keys.server_name != server {
            return Err(Error::remote(format!(
                "asked for {server}'s keys, got {}'s",
                keys.server_name
            )));
        }
        let mut object: CanonicalJsonObject = serde_json::from_str(raw.json().get())
            .map_err(|e| Error::remote(format!("{server}: malformed key answer: {e}")))?;
        let own: KeySet = keys
            .verify_keys
            .iter()
            .map(|(id, k)| (id.to_string(), k.key.clone()))
            .collect();
        if !signed_by(&object, server.as_str(), &own) {
            return Err(Error::remote(format!(
                "{server}'s key answer is not signed by its own key"
            )));
        }
        if let Some((notary, notary_keys)) = notary
            && !signed_by(&object, notary.as_str(), notary_keys)
        {
            return Err(Error::remote(format!(
                "{notary}'s answer for {server} is not signed by the notary"
            )));
        }
        let now = store::now_ms();
        let valid_until = i64::from(keys.valid_until_ts.get()).min(now + MAX_VALIDITY_MS);
        let mut rows: Vec<RemoteKeyRow> = own
            .iter()
            .map(|(id, key)| RemoteKeyRow {
                key_id: id.clone(),
                public_key: key.encode(),
                valid_until_ts: valid_until,
                expired_ts: None,
            })
            .collect();
        rows.extend(keys.old_verify_keys.iter().map(|(id, old)| {
            let expired = i64::from(old.expired_ts.get());
            RemoteKeyRow {
                key_id: id.to_string(),
                public_key: old.key.encode(),
                valid_until_ts: expired,
                expired_ts: Some(expired),
            }
        }));
        // Kept as the server signed it: notaries' signatures are not ours to pass on.
        if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
            signatures.retain(|entity, _| entity == server.as_str());
        }
        let json = serde_json::to_string(&object).map_err(Error::internal)?;
        store::server_keys::store_remote(&self.db, server.as_str(), &rows, &json, valid_until)
            .await?;
        Ok(())
    }

    /// The notary answer for `server`: its stored key answer, refreshed from it when it is not
    /// valid until `minimum_valid_until_ts`, countersigned by this server. Empty when there is none.
    pub async fn notary_answer(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: i64,
        signing_key: &Ed25519KeyPair,
    ) -> Result<Vec<Raw<ServerSigningKeys>>> {
        let mut stored = store::server_keys::remote_response(&self.db, server.as_str()).await?;
        if stored
            .as_ref()
            .is_none_or(|(_, valid_until)| *valid_until < minimum_valid_until_ts)
        {
            let lock = self.fetch_lock(server);
            let fetched = async {
                let _turn = lock.lock().await;
                if let Err(e) = self.fetch_direct(server).await {
                    tracing::info!(%server, error = %e, "notary: fetching server keys failed");
                }
            }
            .await;
            self.release_fetch_lock(server, lock);
            let () = fetched;
            stored = store::server_keys::remote_response(&self.db, server.as_str()).await?;
        }
        let Some((json, _)) = stored else {
            return Ok(vec![]);
        };
        let mut object: CanonicalJsonObject =
            serde_json::from_str(&json).map_err(Error::internal)?;
        ruma::signatures::sign_json(self.client.origin().as_str(), signing_key, &mut object)
            .map_err(Error::internal)?;
        let text = serde_json::to_string(&object).map_err(Error::internal)?;
        Ok(vec![Raw::from_json_string(text).map_err(Error::internal)?])
    }
}

/// Whether `object` carries a valid signature of `entity` by one of `keys`.
pub fn signed_by(object: &CanonicalJsonObject, entity: &str, keys: &KeySet) -> bool {
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
        return false;
    };
    let Some(CanonicalJsonValue::Object(by_entity)) = signatures.get(entity) else {
        return false;
    };
    let Ok(canonical) = ruma::signatures::to_canonical_json_string_for_signing(object) else {
        return false;
    };
    by_entity.iter().any(|(key_id, signature)| {
        let (Some(key), CanonicalJsonValue::String(signature)) = (keys.get(key_id), signature)
        else {
            return false;
        };
        let Ok(signature) = Base64::<ruma::serde::base64::Standard>::parse(signature) else {
            return false;
        };
        key_id.starts_with("ed25519:")
            && ruma::signatures::verify_canonical_json_bytes(
                &ruma::SigningKeyAlgorithm::Ed25519,
                key.as_bytes(),
                signature.as_bytes(),
                canonical.as_bytes(),
            )
            .is_ok()
    })
}

/// Counts a key fetch in the metrics.
fn count_fetch(via: &'static str, fetched: &Result<()>) {
    let result = if fetched.is_ok() { "ok" } else { "failed" };
    ::metrics::counter!(crate::service::metrics::names::FED_KEY_FETCHES, "via" => via, "result" => result)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_per_entity() {
        let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k".into()).unwrap();
        let other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "k".into()).unwrap();
        let mut object: CanonicalJsonObject =
            serde_json::from_str(r#"{"server_name":"a.example","valid_until_ts":1}"#).unwrap();
        ruma::signatures::sign_json("a.example", &pair, &mut object).unwrap();
        ruma::signatures::sign_json("notary.example", &other, &mut object).unwrap();
        let keys = |p: &Ed25519KeyPair| {
            KeySet::from([("ed25519:k".to_owned(), Base64::new(p.public_key().to_vec()))])
        };
        assert!(signed_by(&object, "a.example", &keys(&pair)));
        assert!(signed_by(&object, "notary.example", &keys(&other)));
        assert!(!signed_by(&object, "a.example", &keys(&other)), "wrong key");
        assert!(
            !signed_by(&object, "b.example", &keys(&pair)),
            "no signature"
        );
        object.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(2u32.into()),
        );
        assert!(!signed_by(&object, "a.example", &keys(&pair)), "tampered");
    }
}
