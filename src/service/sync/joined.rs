//! Each user's joined rooms: the keys a long poll subscribes under. Kept per process so that a long
//! poll going back to wait needs no database read; a membership change of the user, made here or
//! announced by another process, forgets the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{AppState, Result, store};

/// Beyond this many users the map starts over: a miss only costs a read.
const MAX_USERS: usize = 100_000;

#[derive(Default)]
pub struct JoinedRoomsCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Moves on every forget: a read that began before a forget must not be stored after it.
    generation: u64,
    by_user: HashMap<String, Arc<[String]>>,
}

impl JoinedRoomsCache {
    /// The cached rooms, or the generation a read starting now stores them under.
    fn get(&self, user_id: &str) -> std::result::Result<Arc<[String]>, u64> {
        let inner = self.inner.lock().unwrap();
        inner.by_user.get(user_id).cloned().ok_or(inner.generation)
    }

    /// The generation a read starting now stores its rooms under, when none are cached.
    pub fn generation_if_missing(&self, user_id: &str) -> Option<u64> {
        self.get(user_id).err()
    }

    /// Stores a read made at `generation`, unless something was forgotten since.
    pub fn put(&self, user_id: &str, rooms: Vec<String>, generation: u64) -> Arc<[String]> {
        let rooms: Arc<[String]> = rooms.into();
        let mut inner = self.inner.lock().unwrap();
        if inner.generation == generation {
            if inner.by_user.len() >= MAX_USERS {
                inner.by_user.clear();
            }
            inner.by_user.insert(user_id.to_owned(), rooms.clone());
        }
        rooms
    }

    /// Call after a commit that changes these users' memberships, before its wake-up.
    pub fn forget<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>) {
        let mut user_ids = user_ids.into_iter().peekable();
        if user_ids.peek().is_none() {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.generation += 1;
        for user_id in user_ids {
            inner.by_user.remove(user_id);
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.generation += 1;
        inner.by_user.clear();
    }
}

/// The rooms `user_id` is joined to, from memory when known.
pub async fn joined_rooms(state: &AppState, user_id: &str) -> Result<Arc<[String]>> {
    match state.joined_rooms.get(user_id) {
        Ok(rooms) => Ok(rooms),
        Err(generation) => {
            let rooms = store::rooms::joined_rooms(&state.db, user_id).await?;
            Ok(state.joined_rooms.put(user_id, rooms, generation))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_overtaken_by_a_forget_is_not_kept() {
        let cache = JoinedRoomsCache::default();
        let Err(generation) = cache.get("@a:x") else {
            panic!("empty cache")
        };
        cache.forget(["@b:x"]);
        cache.put("@a:x", vec!["!old:x".into()], generation);
        assert!(cache.get("@a:x").is_err());

        let Err(generation) = cache.get("@a:x") else {
            panic!("nothing stored")
        };
        cache.put("@a:x", vec!["!r:x".into()], generation);
        assert_eq!(&*cache.get("@a:x").unwrap(), &["!r:x".to_owned()]);
        cache.forget(["@a:x"]);
        assert!(cache.get("@a:x").is_err());
    }
}
