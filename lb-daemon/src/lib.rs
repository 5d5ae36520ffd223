//! ferrolb's userspace: configuration, the pure model and planner, the map writer, the
//! loader and the inspection views. The binary (`main.rs`) is a thin CLI over this.

pub mod batch;
pub mod config;
pub mod daemon;
pub mod host;
pub mod inspect;
pub mod kube_mode;
pub mod loader;
pub mod maps;
pub use lb_model as model;
pub mod objects;
pub mod planner;
pub mod slots;
