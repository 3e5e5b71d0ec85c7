//! The server's ed25519 signing keys: generated on first start, kept in the database so that every
//! Axon process on it signs with the same key; rotated by `axon keys rotate`, which keeps the old key
//! published as an old verify key. Also the signed answer of `GET /_matrix/key/v2/server`.

use ruma::api::federation::discovery::{OldVerifyKey, ServerSigningKeys, VerifyKey};
use ruma::serde::{Base64, Raw};
use ruma::signatures::Ed25519KeyPair;
use ruma::{MilliSecondsSinceUnixEpoch, ServerName, ServerSigningKeyId, UInt};
use sqlx::PgPool;

use crate::store::server_keys::SigningKeyRow;
use crate::{Error, Result, store};

/// Where the first key lived before keys could rotate.
const LEGACY_SIGNING_KEY: &str = "signing_key_ed25519";
/// The legacy key's version, as in `ed25519:a_axon`.
pub const LEGACY_KEY_VERSION: &str = "a_axon";
/// How long a published key answer is valid: Synapse's `key_refresh_interval` default (1 day).
const VALID_FOR_MS: i64 = 24 * 60 * 60 * 1000;

/// The current key pair as PKCS#8 DER and its version; read it with `Ed25519KeyPair::from_der`.
pub struct CurrentKey {
    pub der: Vec<u8>,
    pub version: String,
}

impl CurrentKey {
    pub fn key_pair(&self) -> Result<Ed25519KeyPair> {
        Ed25519KeyPair::from_der(&self.der, self.version.clone())
            .map_err(|e| Error::internal(format!("signing key: {e}")))
    }
}

/// The current key, created on first start (from the legacy key if there is one).
pub async fn load_or_generate(db: &PgPool) -> Result<CurrentKey> {
    if let Some(current) = current(db).await? {
        return Ok(current);
    }
    let (der, version) = match store::secrets::get(db, LEGACY_SIGNING_KEY).await? {
        Some(der) => (der, LEGACY_KEY_VERSION.to_owned()),
        None => (Ed25519KeyPair::generate().to_vec(), new_version()),
    };
    let row = row_for(der, version)?;
    store::server_keys::insert_current(db, &row).await?;
    // Whichever process inserted first won.
    current(db)
        .await?
        .ok_or_else(|| Error::internal("no current signing key after inserting one"))
}

async fn current(db: &PgPool) -> Result<Option<CurrentKey>> {
    Ok(store::server_keys::own_keys(db)
        .await?
        .into_iter()
        .find(|k| k.expired_ts.is_none())
        .map(|k| CurrentKey {
            der: k.secret,
            version: k.key_version,
        }))
}

/// Makes a new current key; the old one becomes an old verify key, expired now. Returns the new
/// key's ID. Running servers sign with the new key after they restart.
pub async fn rotate(db: &PgPool) -> Result<String> {
    load_or_generate(db).await?;
    let row = row_for(Ed25519KeyPair::generate().to_vec(), new_version())?;
    store::server_keys::rotate(db, &row, store::now_ms()).await?;
    Ok(format!("ed25519:{}", row.key_version))
}

fn new_version() -> String {
    format!("a_{}", crate::service::auth::random_string(6))
}

fn row_for(der: Vec<u8>, key_version: String) -> Result<SigningKeyRow> {
    let pair = Ed25519KeyPair::from_der(&der, key_version.clone())
        .map_err(|e| Error::internal(format!("signing key: {e}")))?;
    Ok(SigningKeyRow {
        key_version,
        public_key: Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec())
            .encode(),
        secret: der,
        expired_ts: None,
    })
}

/// The signed key answer: the current key (and the one this process signs with, until it restarts
/// after a rotation) in `verify_keys`, the rotated ones in `old_verify_keys`.
pub async fn server_keys(
    db: &PgPool,
    server_name: &ServerName,
    signing_key: &Ed25519KeyPair,
) -> Result<Raw<ServerSigningKeys>> {
    let now = store::now_ms();
    let valid_until =
        MilliSecondsSinceUnixEpoch(UInt::try_from(now + VALID_FOR_MS).unwrap_or_default());
    let mut keys = ServerSigningKeys::new(server_name.to_owned(), valid_until);
    for row in store::server_keys::own_keys(db).await? {
        let id = ServerSigningKeyId::parse(format!("ed25519:{}", row.key_version))
            .map_err(Error::internal)?;
        let key = Base64::parse(&row.public_key).map_err(Error::internal)?;
        match row.expired_ts {
            Some(expired) if row.key_version != signing_key.version() => {
                let expired_ts =
                    MilliSecondsSinceUnixEpoch(UInt::try_from(expired).unwrap_or_default());
                keys.old_verify_keys
                    .insert(id, OldVerifyKey::new(expired_ts, key));
            }
            _ => {
                keys.verify_keys.insert(id, VerifyKey::new(key));
            }
        }
    }
    sign(&keys, server_name, signing_key)
}

/// `object` signed by this server, as raw JSON.
pub fn sign<T: serde::Serialize>(
    object: &T,
    server_name: &ServerName,
    signing_key: &Ed25519KeyPair,
) -> Result<Raw<T>> {
    let value = serde_json::to_value(object).map_err(Error::internal)?;
    let mut canonical: ruma::CanonicalJsonObject = match value {
        serde_json::Value::Object(map) => {
            ruma::canonical_json::try_from_json_map(map).map_err(Error::internal)?
        }
        _ => return Err(Error::internal("signing a non-object")),
    };
    ruma::signatures::sign_json(server_name.as_str(), signing_key, &mut canonical)
        .map_err(Error::internal)?;
    let text = serde_json::to_string(&canonical).map_err(Error::internal)?;
    Raw::from_json_string(text).map_err(Error::internal)
}
