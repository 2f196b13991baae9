//! The operator's accounts: what an account file holds and how it reaches the pool.
//!
//! Layout:
//! - [`credentials`]: [`Credentials`], the long-lived secrets of one account (cookies,
//!   `csesidx`, `configId`, the web app's `authorization`), as the account file carries them.
//!   An upstream adapter turns them into a short-lived token ([`crate::upstream::Authenticator`]).
//! - [`email`]: which account e-mails are imported, and how stored ones are printed.
//! - [`service`]: the one place where new credentials merge with a stored account and reach
//!   the account's actor ([`AccountsService`], [`service::merge`], [`service::load`]).

pub mod credentials;
pub mod email;
pub mod service;

pub use credentials::{Cookie, Credentials};
pub use service::{AccountsService, Incoming, Merged};
