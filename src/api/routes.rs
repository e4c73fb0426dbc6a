//! The server API's URL map (docs/api.md): which endpoint a method and path name, or the
//! 404/405 answer.

use crate::http::{Response, Status, json_error};
use crate::room::RoomId;

/// An endpoint of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/publish`.
    Publish,
    /// `POST /api/broadcast`.
    Broadcast,
    /// `GET /api/rooms`.
    Rooms,
    /// `GET /api/rooms/<room>/presence`.
    Presence(RoomId),
    /// `GET /api/rooms/<room>/history`.
    History(RoomId),
    /// `POST /api/disconnect`.
    Disconnect,
}

/// What a path leads to, before the method is checked.
enum Path {
    Found {
        endpoint: Endpoint,
        allow: &'static str,
    },
    BadRoom,
    Missing,
}

fn lookup(path: &str) -> Path {
    let found = |endpoint, allow| Path::Found { endpoint, allow };
    match path {
        "/api/publish" => return found(Endpoint::Publish, "POST"),
        "/api/broadcast" => return found(Endpoint::Broadcast, "POST"),
        "/api/rooms" => return found(Endpoint::Rooms, "GET, HEAD"),
        "/api/disconnect" => return found(Endpoint::Disconnect, "POST"),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/api/rooms/") else {
        return Path::Missing;
    };
    let Some((room, what)) = rest.split_once('/') else {
        return Path::Missing;
    };
    let make: fn(RoomId) -> Endpoint = match what {
        "presence" => Endpoint::Presence,
        "history" => Endpoint::History,
        _ => return Path::Missing,
    };
    match RoomId::parse(room) {
        Some(room) => found(make(room), "GET, HEAD"),
        None => Path::BadRoom,
    }
}

/// The endpoint `method` and `path` (query removed) name, or the answer: 404 for no such
/// endpoint, 400 for a room name that breaks the rule, 405 (with `Allow`) for a method the
/// endpoint does not take. `HEAD` is taken wherever `GET` is.
pub fn route(method: &str, path: &str) -> Result<Endpoint, Response> {
    match lookup(path) {
        Path::Missing => Err(json_error(Status::NotFound, &[], "no such endpoint")),
        Path::BadRoom => Err(json_error(
            Status::BadRequest,
            &[],
            "a room name is 1-64 of A-Z a-z 0-9 - _",
        )),
        Path::Found { endpoint, allow } => {
            let allowed = allow.split(", ").any(|m| m == method);
            if allowed {
                Ok(endpoint)
            } else {
                Err(json_error(
                    Status::MethodNotAllowed,
                    &[("Allow", allow)],
                    &format!("{path} takes {allow}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str) -> u16 {
        match route(method, path) {
            Ok(_) => 200,
            Err(response) => response.status.line().0,
        }
    }

    #[test]
    fn endpoints_and_their_methods() {
        assert_eq!(route("POST", "/api/publish").ok(), Some(Endpoint::Publish));
        assert_eq!(
            route("POST", "/api/broadcast").ok(),
            Some(Endpoint::Broadcast)
        );
        assert_eq!(route("GET", "/api/rooms").ok(), Some(Endpoint::Rooms));
        let room = RoomId::parse("a-1").unwrap();
        assert_eq!(
            route("GET", "/api/rooms/a-1/presence").ok(),
            Some(Endpoint::Presence(room.clone()))
        );
        assert_eq!(
            route("HEAD", "/api/rooms/a-1/history").ok(),
            Some(Endpoint::History(room))
        );
        assert_eq!(
            route("POST", "/api/disconnect").ok(),
            Some(Endpoint::Disconnect)
        );
    }

    #[test]
    fn wrong_methods_unknown_paths_and_bad_rooms() {
        assert_eq!(status("GET", "/api/publish"), 405);
        assert_eq!(status("DELETE", "/api/rooms"), 405);
        assert_eq!(status("POST", "/api/rooms/a/presence"), 405);
        match route("GET", "/api/disconnect") {
            Err(response) => {
                let text = String::from_utf8_lossy(&response.bytes).into_owned();
                assert!(text.contains("\r\nAllow: POST\r\n"), "{text}");
            }
            Ok(_) => panic!("GET /api/disconnect must be refused"),
        }
        for path in [
            "/api/",
            "/api/nope",
            "/api/rooms/a",
            "/api/rooms/a/members",
            "/api/rooms/a/presence/x",
            "/api/publish/",
        ] {
            assert_eq!(status("GET", path), 404, "{path}");
        }
        assert_eq!(status("GET", "/api/rooms/a.b/presence"), 400);
        assert_eq!(
            status("GET", &format!("/api/rooms/{}/history", "r".repeat(65))),
            400
        );
    }
}
