//! Purchases: `POST /v1/purchases` and `GET /v1/purchases/{id}`.
//!
//! The accepting core validates the request ([`api`]) and hands it over the purchase
//! lane ([`lane`]) to the core that owns the purchase's shard. That core alone reads and
//! writes the shard, decides what the idempotency key means (new, replay, conflict), and
//! runs the saga ([`saga`], over [`world`]). At start each core resumes the unfinished
//! purchases of its shards ([`recover`]) and later expires old ones ([`expire_loop`]).

pub mod api;
pub mod durable;
mod ids;
pub mod lane;
mod owner;
pub mod record;
mod routes;
pub mod saga;
pub mod secrets;
pub mod state;
mod upkeep;
pub mod world;

pub use self::ids::{new_id, owner_core, shard_of};
pub use self::owner::serve_lane;
pub use self::routes::{get, post};
pub use self::upkeep::{expire_loop, recover};
