//! ferrolb's userspace: configuration, the pure planner, the sync engine and map writer,
//! the loader, host set-up, both daemon modes and the inspection views. The binary
//! (`main.rs`) parses arguments and dispatches to its commands.

pub mod announce;
pub mod capacity;
pub mod config;
pub mod datapath;
pub mod edge;
pub mod file_mode;
pub mod health;
pub mod host;
pub mod inspect;
pub mod kube_mode;
pub mod loader;
pub mod maps;
pub mod objects;
pub mod pin_guard;
pub mod planner;
pub mod slots;
pub mod sync;
