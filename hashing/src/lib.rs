//! Hashing for the XDP load balancer.
//!
//! * [`flow`]: the per-packet 5-tuple hash. `no_std`, allocation free, panic
//!   free, and compiled for the eBPF target as well as for the host, so the
//!   data plane and the control plane agree bit for bit.
//! * [`maglev`] (feature `std`, on by default): builds weighted Maglev lookup
//!   tables in user space; the daemon copies them into a BPF map.
//!
//! Both hashes are versioned ([`flow::FLOW_HASH_VERSION`],
//! `maglev::MAGLEV_HASH_VERSION`): any change of their output is a change of
//! the wire contract between daemon and data plane and must bump the version.

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow;
#[cfg(feature = "std")]
pub mod maglev;
#[cfg(feature = "std")]
mod xxh64;
