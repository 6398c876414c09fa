//! The fleet's event stream, the same from every replica and resumable.
//!
//! Agents report progress to the replica holding their session; that replica appends it to
//! the **journal** in the store ([`journal`]): batches of events under
//! `journal/<replica>/<batch>`, one put per batch, on a lease as long as the retention. Plan
//! and task records are in the store already. Every replica follows the store from a revision
//! ([`follow`]), through one watch that decodes each change once for every stream on it
//! ([`fanout`]), and streams plan and task changes and journal events in the store's one
//! order, each with its [`Sequence`], so a watcher that reconnects to any replica continues after
//! the last sequence it saw, without gaps or duplicates.
//!
//! Why the store rather than replica-to-replica streams: the store already orders every
//! change and keeps its history for a while, every replica already follows it, and a replica
//! that dies takes nothing with it. The cost is one store write per batch (at most
//! [`journal::BATCH_WINDOW`] apart per replica, at most [`journal::BATCH_EVENTS`] events
//! each), so at most 1 and at least 1/256 etcd request per event, at most ten a second per
//! replica however busy the fleet, plus one lease grant per rotation.

pub mod fanout;
pub mod follow;
pub mod journal;
mod sequence;
mod update;

pub use sequence::Sequence;
