//! Media in and out of the gateway.
//!
//! - [`store`]: generated images and videos, written to `<data_dir>/media/` and served at
//!   unguessable, expiring links (`GET /media/{name}`), bounded by total size and age.
//! - (client media URLs the gateway fetches itself live in `fetch`, with SSRF protection.)

pub mod store;

pub use store::{MediaOut, MediaStore};
