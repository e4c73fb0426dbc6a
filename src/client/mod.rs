//! `shardcast client`: a WebSocket client for chatting in and scripting chat servers (this
//! one or any other), in three modes (docs/client.md).
//!
//! - **Chat** (`shardcast client --nick ann URL`): speaks `shardcast.v1`, says `hello`, sends
//!   typed lines as messages ([`typed`]: `/quit`, `/help`, `//`) and shows the room as lines
//!   for people ([`render`]); a prompt in a terminal, lines in a pipe ([`pipe`]).
//! - **Raw pipe** (`shardcast client URL`, or `--raw`): stdin lines become messages and
//!   messages become stdout lines as they came, like websocat ([`pipe`]).
//! - **Interactive** (`shardcast client`): a prompt with `/connect`, `/send`, `/close`,
//!   `/show`, `/list`, `/help` and `/quit`, several connections at once ([`interactive`]).
//!
//! Under `--reconnect`, chat and pipe survive drops (`crate::backoff`: forever unless
//! `--max-retries`) and, speaking `shardcast.v1`, resume the room where they left off
//! ([`resume`]).
//!
//! All open connections the same way ([`connect`]: TCP, then TLS for `wss` with
//! [`tls`]'s trust rules, then the HTTP upgrade with the `--header`, `--origin` and
//! `--subprotocol` of [`options`]) and drive them the same way: one thread per connection
//! owns the socket and runs a mio event loop ([`pump`]) that the user reaches through a
//! bounded [`mailbox`] with a waker. Nothing else touches the socket, so there is no lock
//! around it; interactive mode shares only each connection's record (a small mutex held for
//! one update) and the console.
//!
//! ```text
//! shardcast client --nick ann ws://127.0.0.1:8080/general # chat mode
//! shardcast client ws://127.0.0.1:8080/general            # raw pipe mode
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
