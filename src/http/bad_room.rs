//! The page for a path that was meant as a room but is not a room name (`/bad.room`,
//! `/my%20room`, a 65-character name): a small HTML page that states the rule and links to a
//! room name made from the bad one, and to the lobby.
//!
//! It answers only plain GETs (and HEADs) that found no static asset, so files keep working;
//! an upgrade to such a path keeps its bare 404. The path is shown as the user typed it
//! (percent-decoded), always HTML-escaped: it comes from the request.

use percent_encoding::percent_decode_str;

use crate::room::{DEFAULT_ROOM, MAX_ROOM_NAME, RoomId};

use super::route::{Route, route};

/// Extensions of files a page loads: a missing one is a missing asset (a plain 404), not a
/// room name gone wrong.
const ASSET_EXTENSIONS: &[&str] = &[
    "css",
    "gif",
    "htm",
    "html",
    "ico",
    "jpeg",
    "jpg",
    "js",
    "json",
    "map",
    "mjs",
    "png",
    "svg",
    "txt",
    "webmanifest",
    "webp",
    "woff",
    "woff2",
    "xml",
];

/// The room name a path was meant to be, when it looks like one: one path segment (a
/// trailing `/` allowed), not a missing file, percent-decoded. `None` for anything else
/// (`/a/b`, `/app.v2.js`).
pub fn meant_as_room(path: &str) -> Option<String> {
    let segment = path.strip_prefix('/')?;
    let segment = segment.strip_suffix('/').unwrap_or(segment);
    if segment.is_empty() || segment.contains('/') || looks_like_asset(segment) {
        return None;
    }
    Some(percent_decode_str(segment).decode_utf8_lossy().into_owned())
}

fn looks_like_asset(segment: &str) -> bool {
    segment
        .rsplit_once('.')
        .is_some_and(|(_, ext)| ASSET_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// A valid room name made from `name`: each run of characters a room name cannot have
/// becomes one `-` (none at either end), cut to the longest name allowed. `None` when nothing
/// usable is left, or the result is a reserved path (`health`, `metrics`).
pub fn suggestion(name: &str) -> Option<RoomId> {
    let mut out = String::with_capacity(name.len().min(MAX_ROOM_NAME));
    let mut pending_dash = false;
    for c in name.chars() {
        if allowed(c) {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    // Only ASCII was kept: cutting at a byte count is cutting at a character.
    out.truncate(MAX_ROOM_NAME);
    let room = RoomId::parse(&out)?;
    matches!(route(&format!("/{out}")), Route::Room(_)).then_some(room)
}

/// Whether a room name may have `c` (the rule of [`RoomId::parse`]).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Why `name` is not a room name, in a sentence fragment for people.
fn problem(name: &str) -> String {
    let count = name.chars().count();
    let mut bad: Vec<char> = Vec::new();
    for c in name.chars() {
        if !allowed(c) && !bad.contains(&c) {
            bad.push(c);
        }
    }
    let shown: Vec<String> = bad
        .iter()
        .take(5)
        .map(|c| match c {
            ' ' => "a space".to_string(),
            c if c.is_control() || c.is_whitespace() => format!("U+{:04X}", u32::from(*c)),
            c => format!("“{c}”"),
        })
        .collect();
    match (shown.is_empty(), count > MAX_ROOM_NAME) {
        (true, true) => format!("it is {count} characters long, over {MAX_ROOM_NAME}"),
        (false, too_long) => {
            let more = if bad.len() > shown.len() { ", …" } else { "" };
            let long = if too_long {
                format!(" and is {count} characters long")
            } else {
                String::new()
            };
            format!("it contains {}{more}{long}", shown.join(", "))
        }
        // Only a reserved path (`/health/`) gets here with nothing wrong in it.
        (true, false) => "the name is reserved".to_string(),
    }
}

/// The page for `name` (as [`meant_as_room`] read it).
pub fn page(name: &str) -> String {
    let shown = escape(name);
    let what = if suggestion(name).is_some_and(|room| room.as_str() == name) {
        // A good name: only the `/` after it was wrong (`/general/`).
        format!(
            "“<code id=\"name\">{shown}</code>/” is not a room's address: it has a “/” \
             after the name."
        )
    } else {
        format!(
            "“<code id=\"name\">{shown}</code>” is not a room name: {}.",
            escape(&problem(name))
        )
    };
    let suggested = match suggestion(name) {
        Some(room) => format!(
            "<p>Try <a id=\"suggestion\" href=\"/{room}\">/{room}</a>, or the \
             <a id=\"lobby\" href=\"/\">{DEFAULT_ROOM}</a>.</p>",
            room = room.as_str()
        ),
        None => format!("<p>Try the <a id=\"lobby\" href=\"/\">{DEFAULT_ROOM}</a>.</p>"),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>Not a room name · shardcast</title>\n\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\n\
         <link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body class=\"bad-room\">\n\
         <header class=\"bar\">\n  <div class=\"title\">\n    \
         <span class=\"brand\">shardcast</span>\n    <h1>Not a room name</h1>\n  </div>\n\
         </header>\n<main class=\"explain\">\n\
         <p>{what}</p>\n\
         <p id=\"rule\">A room name is 1–{MAX_ROOM_NAME} characters, each a letter \
         (<code>A-Z a-z</code>), a digit (<code>0-9</code>), <code>-</code> or \
         <code>_</code>.</p>\n{suggested}\n</main>\n</body>\n</html>\n"
    )
}

/// `text` safe to place in HTML text or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suggest(name: &str) -> Option<String> {
        suggestion(name).map(|r| r.as_str().to_string())
    }

    #[test]
    fn single_segments_that_are_not_files_were_meant_as_rooms() {
        assert_eq!(meant_as_room("/bad.room").as_deref(), Some("bad.room"));
        assert_eq!(meant_as_room("/my%20room").as_deref(), Some("my room"));
        assert_eq!(meant_as_room("/general/").as_deref(), Some("general"));
        assert_eq!(meant_as_room("/caf%C3%A9").as_deref(), Some("café"));
        for not_a_room in ["/", "/a/b", "/nope.js", "/x.CSS", "/favicon.ico", "//", "x"] {
            assert_eq!(meant_as_room(not_a_room), None, "{not_a_room}");
        }
    }

    #[test]
    fn suggestions_are_valid_rooms_made_from_the_name() {
        assert_eq!(suggest("bad.room").as_deref(), Some("bad-room"));
        assert_eq!(suggest("my room").as_deref(), Some("my-room"));
        assert_eq!(suggest("a . . b").as_deref(), Some("a-b"));
        assert_eq!(suggest(".hidden!").as_deref(), Some("hidden"));
        assert_eq!(suggest("-keep_-").as_deref(), Some("-keep_-"));
        assert_eq!(suggest("café au lait").as_deref(), Some("caf-au-lait"));
        let long = "r".repeat(65);
        assert_eq!(suggest(&long), Some("r".repeat(64)));
        assert_eq!(suggest("..."), None);
        assert_eq!(suggest("health."), None, "a reserved path is no room");
    }

    #[test]
    fn the_page_escapes_the_name_and_states_the_rule() {
        let page = page("<script>alert(\"x\")</script>&");
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"));
        assert!(page.contains("1–64 characters"));
        assert!(page.contains("href=\"/script-alert-x-script\""));
        assert!(page.contains("href=\"/\""));
    }

    #[test]
    fn a_good_name_with_a_slash_after_it_is_told_so() {
        let page = page("general");
        assert!(page.contains("it has a “/” after the name"));
        assert!(page.contains("href=\"/general\""));
    }

    #[test]
    fn the_problem_is_named() {
        assert_eq!(problem("bad.room"), "it contains “.”");
        assert_eq!(problem("my room"), "it contains a space");
        assert_eq!(
            problem(&"r".repeat(65)),
            "it is 65 characters long, over 64"
        );
        assert_eq!(
            problem(&format!("a.{}", "r".repeat(70))),
            "it contains “.” and is 72 characters long"
        );
    }
}
