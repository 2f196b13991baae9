//! The operator's accounts: what an account file holds and how it reaches the pool.
//!
//! Layout:
//! - [`credentials`]: [`Credentials`], the long-lived secrets of one account (cookies,
//!   `csesidx`, `configId`, the web app's `authorization`), as the account file carries them.
//!   An upstream adapter turns them into a short-lived token ([`crate::upstream::Authenticator`]).

pub mod credentials;

pub use credentials::{Cookie, Credentials};
