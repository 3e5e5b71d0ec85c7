//! Admission for database-path syncs: at most `permits` compute at once, each holding one pooled
//! connection, so the rest of the pool stays free for every other request. The others wait their
//! turn in arrival order, at most `wait`, then get a 503. One account counts for at most
//! `PER_ACCOUNT` of the turns in progress, so a client firing dozens of syncs at once delays only
//! itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Error, Result};

/// How many database-path syncs of one account run (or hold a place in the shared queue) at once.
const PER_ACCOUNT: usize = 2;

type Accounts = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

pub struct SyncGate {
    shared: Arc<Semaphore>,
    accounts: Accounts,
    wait: Duration,
}

/// A sync's turn: released when dropped.
pub struct Turn {
    _shared: OwnedSemaphorePermit,
    account: Option<OwnedSemaphorePermit>,
    user: String,
    accounts: Accounts,
}

impl SyncGate {
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            shared: Arc::new(Semaphore::new(permits.max(1))),
            accounts: Arc::default(),
            wait,
        }
    }

    /// Waits for `user`'s turn: first among the user's own syncs, then in the shared queue.
    pub async fn enter(&self, user: &str) -> Result<Turn> {
        let account = {
            let mut accounts = self.accounts.lock().unwrap();
            accounts
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_ACCOUNT)))
                .clone()
        };
        let waited = tokio::time::timeout(self.wait, async {
            let account = account.acquire_owned().await;
            let shared = self.shared.clone().acquire_owned().await;
            (account, shared)
        })
        .await;
        let turn = |account, shared| Turn {
            _shared: shared,
            account: Some(account),
            user: user.to_owned(),
            accounts: self.accounts.clone(),
        };
        match waited {
            Ok((Ok(account), Ok(shared))) => Ok(turn(account, shared)),
            // Not closed while the server runs; and a timeout: the server is saturated.
            _ => {
                forget_if_idle(&self.accounts, user);
                Err(Error::unavailable(self.wait.as_millis().min(5000) as u64))
            }
        }
    }

    /// Accounts with a sync in progress or waiting (for tests of the bound).
    pub fn accounts_tracked(&self) -> usize {
        self.accounts.lock().unwrap().len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.account.take());
        forget_if_idle(&self.accounts, &self.user);
    }
}

/// Drops an account's entry once nobody holds or waits on it, so the map stays as small as the
/// number of accounts syncing.
fn forget_if_idle(accounts: &Accounts, user: &str) {
    let mut accounts = accounts.lock().unwrap();
    if let Some(semaphore) = accounts.get(user)
        && Arc::strong_count(semaphore) == 1
    {
        accounts.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_account_waits_behind_itself_not_others() {
        let gate = SyncGate::new(4, Duration::from_millis(50));
        let a1 = gate.enter("@a:x").await.unwrap();
        let a2 = gate.enter("@a:x").await.unwrap();
        // A third of @a's waits (and times out); @b still gets in.
        assert!(gate.enter("@a:x").await.is_err());
        let b = gate.enter("@b:x").await.unwrap();
        drop((a1, a2, b));
        assert_eq!(gate.accounts_tracked(), 0);
    }

    #[tokio::test]
    async fn a_saturated_gate_answers_unavailable() {
        let gate = SyncGate::new(1, Duration::from_millis(20));
        let _a = gate.enter("@a:x").await.unwrap();
        match gate.enter("@b:x").await {
            Err(Error::Unavailable { .. }) => {}
            _ => panic!("expected unavailable"),
        }
        assert_eq!(gate.accounts_tracked(), 1);
    }
}
