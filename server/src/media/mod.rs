//! Media in and out of the gateway.
//!
//! - [`store`]: generated images and videos, written to `<data_dir>/media/` and served at
//!   unguessable, expiring links (`GET /media/{name}`), bounded by total size and age.
//! - [`fetch`]: client media URLs the gateway fetches itself when the upstream will not take
//!   them by URI, with SSRF protection.
//! - [`mime`]: magic-byte sniffing and the media types the upstream accepts.

pub mod fetch;
pub mod mime;
pub mod store;

pub use fetch::{FetchError, Fetched, MediaFetcher};
pub use store::{MediaOut, MediaStore};
