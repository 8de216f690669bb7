//! The cluster store on etcd (SPEC.md, "The cluster store"): the cluster model kept in etcd
//! instead of a file, every node watching it.
//!
//! Where it sits: a source of change, beside the cluster file. Nothing here runs on the packet
//! path: the watcher ([`watch`]) turns the store's state ([`state::State`]) into a checked
//! cluster and hands it to the node's one change path (`node::Change`, committed between
//! batches); the admin commands ([`admin`]) validate every write as the cluster file is checked
//! and write it in one transaction. The key layout is in [`layout`] and docs/store.md.

pub mod admin;
pub mod etcd;
pub mod layout;
pub mod state;
pub mod view;
pub mod watch;
