//! The chat page and its files: embedded in the binary, or read from `--static-dir`.
//!
//! Static files are read synchronously on the shard thread, as Beast's `doc_root` does: they
//! are small, usually in the page cache, and served once per page load, not per message.

use std::borrow::Cow;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Largest static file served from `--static-dir` (bigger ones are treated as missing, so a
/// stray large file cannot make a shard allocate without bound).
const MAX_STATIC_FILE: u64 = 8 * 1024 * 1024;

/// The embedded page, in the order `(path, content type, body)`.
const EMBEDDED: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("page/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("page/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("page/favicon.svg"),
    ),
    // Asked for by browsers on any page that names no icon (`/health` in a tab, say); made
    // from favicon.svg by tests/browser/favicon-ico.mjs.
    (
        "/favicon.ico",
        "image/x-icon",
        include_bytes!("page/favicon.ico"),
    ),
];

/// The `Cache-Control` of the asset at `path`: the page's own files are revalidated on
/// every load, so that a new server version is picked up at once; the icons change so rarely
/// that browsers may keep them a day instead of asking on every page load.
pub fn cache_control(path: &str) -> &'static str {
    match path {
        "/favicon.ico" | "/favicon.svg" => "public, max-age=86400",
        _ => "no-cache",
    }
}

/// A file ready to serve.
#[derive(Debug)]
pub struct Asset {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: Cow<'static, [u8]>,
}

/// Where assets come from.
#[derive(Debug, Clone, Default)]
pub struct Assets {
    dir: Option<PathBuf>,
}

impl Assets {
    /// Embedded assets (`None`) or files from `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Assets { dir }
    }

    /// The asset at URL `path`; `Ok(None)` when there is none.
    pub fn get(&self, path: &str) -> io::Result<Option<Asset>> {
        match &self.dir {
            None => {
                Ok(EMBEDDED
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, content_type, body)| Asset {
                        content_type,
                        body: Cow::Borrowed(body),
                    }))
            }
            Some(dir) => read_from_dir(dir, path),
        }
    }
}

fn read_from_dir(dir: &Path, path: &str) -> io::Result<Option<Asset>> {
    let Some(relative) = safe_relative_path(path) else {
        return Ok(None);
    };
    let file = dir.join(relative);
    let meta = match std::fs::metadata(&file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() > MAX_STATIC_FILE {
        return Ok(None);
    }
    let body = std::fs::read(&file)?;
    Ok(Some(Asset {
        content_type: content_type_for(&file),
        body: Cow::Owned(body),
    }))
}

/// The URL path as a relative file path, refusing anything that could leave the folder
/// (`..`, absolute parts, backslashes, NUL) or reach hidden files.
fn safe_relative_path(path: &str) -> Option<PathBuf> {
    let trimmed = path.strip_prefix('/')?;
    if trimmed.is_empty() || trimmed.contains(['\\', '\0']) {
        return None;
    }
    let relative = PathBuf::from(trimmed);
    let clean = relative.components().all(|c| match c {
        Component::Normal(part) => !part.to_string_lossy().starts_with('.'),
        _ => false,
    });
    clean.then_some(relative)
}

fn content_type_for(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        assert!(safe_relative_path("/app.js").is_some());
        assert!(safe_relative_path("/css/site.css").is_some());
        assert!(safe_relative_path("/../etc/passwd").is_none());
        assert!(safe_relative_path("/a/../../b").is_none());
        assert!(safe_relative_path("/.git/config").is_none());
        assert!(safe_relative_path("//etc/passwd").is_none());
        assert!(safe_relative_path("/a\\b").is_none());
    }

    #[test]
    fn the_embedded_page_is_there() {
        let page = Assets::default().get("/index.html").unwrap().unwrap();
        assert!(page.content_type.starts_with("text/html"));
        assert!(Assets::default().get("/nope.js").unwrap().is_none());
    }

    #[test]
    fn the_icons_are_there_and_may_be_cached() {
        let ico = Assets::default().get("/favicon.ico").unwrap().unwrap();
        assert_eq!(ico.content_type, "image/x-icon");
        assert_eq!(&ico.body[..4], b"\0\0\x01\0", "an ICO header");
        let svg = Assets::default().get("/favicon.svg").unwrap().unwrap();
        assert_eq!(svg.content_type, "image/svg+xml");
        assert!(svg.body.starts_with(b"<svg"));
        assert!(cache_control("/favicon.ico").contains("max-age"));
        assert_eq!(cache_control("/app.js"), "no-cache");
    }
}
