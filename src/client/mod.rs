//! `shardcast client`: a WebSocket client for trying and scripting chat servers (this one
//! or any other), in two modes.
//!
//! - **Interactive** (`shardcast client`): a prompt with `connect`, `send`, `close`, `show`,
//!   `list`, `help` and `quit`, several connections at once ([`interactive`]).
//! - **Pipe** (`shardcast client URL`): stdin lines become messages and messages become
//!   stdout lines, like websocat ([`pipe`]); `--reconnect` survives drops ([`backoff`]) and,
//!   speaking `shardcast.v1`, resumes the room where it left off ([`resume`]).
//!
//! Both open connections the same way ([`connect`]: TCP, then TLS for `wss` with
//! [`tls`]'s trust rules, then the HTTP upgrade with the `--header`, `--origin` and
//! `--subprotocol` of [`options`]) and drive them the same way: one thread per connection
//! owns the socket and runs a mio event loop ([`pump`]) that the user reaches through a
//! bounded [`mailbox`] with a waker. Nothing else touches the socket, so there is no lock
//! around it; interactive mode shares only each connection's record (a small mutex held for
//! one update) and the console.
//!
//! ```text
//! shardcast client ws://127.0.0.1:8080/general            # pipe mode
//! shardcast client wss://chat.example/general --ca ca.pem  # trust a private CA
//! shardcast client --origin https://chat.example           # interactive, every connection
//! ```

pub mod connect;
pub mod console;
pub mod error;
pub mod interactive;
pub mod mailbox;
pub mod options;
pub mod pipe;
pub mod pump;
pub mod render;
pub mod resume;
pub mod stream;
pub mod target;
pub mod tls;
pub mod typed;

pub use error::{ClientError, ConnectError};
pub use options::{ConnectOptions, Header, LinkSettings};
pub use pipe::{PipeOptions, Retries};
pub use target::Target;
pub use tls::Trust;
