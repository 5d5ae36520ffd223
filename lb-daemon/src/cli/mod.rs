//! The `ferrolb` commands other than the daemon modes: each parses nothing (clap did),
//! does its job and renders its own output.

mod flow_tables;
pub mod inspect;
pub mod list_extras;
pub mod setup;

/// How a view is printed.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}
