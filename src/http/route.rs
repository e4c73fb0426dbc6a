//! The URL map. One path segment of room-name characters is a room; everything else is fixed
//! or a static asset.
//!
//! | path | plain GET | WebSocket upgrade |
//! |---|---|---|
//! | `/` | chat page | room `lobby` |
//! | `/<room>` (1–64 of `A-Z a-z 0-9 - _`) | chat page | room `<room>` |
//! | `/health` | health JSON | 404 |
//! | `/metrics` | Prometheus text | 404 |
//! | anything else | static asset, or 404 (an HTML page with the rule for a bad room name, [`super::bad_room`]) | 404 |
//!
//! So `health` and `metrics` cannot be used as room names.

use crate::room::{DEFAULT_ROOM, RoomId};

/// Where a path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/health`.
    Health,
    /// `/metrics`.
    Metrics,
    /// A room (chat page for plain GET, membership for an upgrade).
    Room(RoomId),
    /// Any other path: a static asset.
    Asset(&'a str),
}

/// Whether `path` is under `/api/`, the server API's prefix on the main port (when the API
/// is served there; docs/api.md). `/api` alone is still a room.
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Maps a request path (query already removed) to its route.
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/" => Route::Room(RoomId::parse(DEFAULT_ROOM).expect("the default room name is legal")),
        "/health" => Route::Health,
        "/metrics" => Route::Metrics,
        _ => match path.strip_prefix('/').and_then(RoomId::parse) {
            Some(room) => Route::Room(room),
            None => Route::Asset(path),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_as_documented() {
        assert_eq!(route("/"), Route::Room(RoomId::parse("lobby").unwrap()));
        assert_eq!(
            route("/general"),
            Route::Room(RoomId::parse("general").unwrap())
        );
        assert_eq!(route("/health"), Route::Health);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/app.js"), Route::Asset("/app.js"));
        assert_eq!(route("/a/b"), Route::Asset("/a/b"));
        assert_eq!(
            route(&format!("/{}", "r".repeat(65))),
            Route::Asset(&format!("/{}", "r".repeat(65)))
        );
    }
}
