//! PLACEHOLDER until the real module lands (being written in parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomVersion { V10, V11, V12 }
pub struct StateEvent<'a> { pub sender: &'a str, pub content: &'a serde_json::Value }
pub trait RoomState { fn get(&self, event_type: &str, state_key: &str) -> Option<StateEvent<'_>>; }
pub struct NewEvent<'a> { pub event_type: &'a str, pub state_key: Option<&'a str>, pub sender: &'a str, pub content: &'a serde_json::Value }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);
pub fn check(_v: RoomVersion, _e: &NewEvent<'_>, _s: &dyn RoomState) -> Result<(), AuthError> { Ok(()) }
pub fn user_power_level(_v: RoomVersion, _s: &dyn RoomState, _u: &str) -> i64 { 0 }
pub fn required_event_level(_v: RoomVersion, _s: &dyn RoomState, _t: &str, _is_state: bool) -> i64 { 0 }
