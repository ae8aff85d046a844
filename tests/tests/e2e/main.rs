//! The end-to-end tests, one binary with a module per area (linked once: each test binary links
//! every dependency, Polars included, again). They start the synthetic archive server on a free
//! loopback port and run the real job binaries and the runner against it, in temp stores.
//! `cargo test -p archive-sim --test e2e AREA::` runs one area, e.g. `runner::`.

mod common;

mod aggregate;
mod bars;
mod build;
mod convert;
mod download;
mod etl;
mod extract;
mod hygiene;
mod load;
mod runner;
mod store;
mod tail;
mod universe;
mod validate;
