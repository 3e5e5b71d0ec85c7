//! The server's ed25519 signing key: generated on first start, kept in the database so that every
//! Axon process on it signs with the same key.

use ruma::signatures::Ed25519KeyPair;
use sqlx::PgPool;

use crate::{Error, Result, store};

const SIGNING_KEY: &str = "signing_key_ed25519";
/// The key's version, as in `ed25519:a_axon`.
pub const KEY_VERSION: &str = "a_axon";

pub async fn load_or_generate(db: &PgPool) -> Result<Ed25519KeyPair> {
    let der = match store::secrets::get(db, SIGNING_KEY).await? {
        Some(der) => der,
        None => {
            let generated = Ed25519KeyPair::generate();
            store::secrets::insert_or_get(db, SIGNING_KEY, &generated).await?
        }
    };
    Ed25519KeyPair::from_der(&der, KEY_VERSION.into())
        .map_err(|e| Error::internal(format!("signing key: {e}")))
}
