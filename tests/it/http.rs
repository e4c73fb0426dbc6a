//! Plain HTTP answers on the WebSocket port.

use std::io::{Read, Write};

use crate::util::{ServerProcess, read_response};

#[test]
fn health_reports_shards_and_connections() {
    let server = ServerProcess::start(&["--workers", "3"]);
    let _member = server.client("lobby");
    let answer = server.http("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The single model runs one thread whatever --workers says.
    let shards = if crate::util::model() == "single" {
        1
    } else {
        3
    };
    // The member is open; the health request's own connection is not counted.
    let expected = format!("{{\"status\":\"ok\",\"shards\":{shards},\"connections\":1}}\n");
    assert!(answer.ends_with(&expected), "{answer}");
}

#[test]
fn keep_alive_serves_several_requests_and_errors_close() {
    let server = ServerProcess::start(&[]);
    let mut s = server.raw();
    for path in ["/", "/general", "/app.js", "/missing.png"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let answer = read_response(&mut s);
        let expected = if path == "/missing.png" { "404" } else { "200" };
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected} ")),
            "{path}: {answer}"
        );
    }
    s.write_all(b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_response(&mut s);
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(answer.contains("Connection: close\r\n"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the server closes the connection");
    assert!(rest.is_empty());
}

#[test]
fn bad_requests_get_their_status() {
    let server = ServerProcess::start(&[]);
    let upgrade = |extra: &str| {
        format!(
            "GET /r HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let cases = [
        ("BLAH\r\n\r\n".to_string(), "400"),
        (upgrade("Sec-WebSocket-Version: 13\r\n"), "400"),
        (
            upgrade(&format!("{key}Sec-WebSocket-Version: 8\r\n")),
            "426",
        ),
        (
            format!(
                "GET /a/b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n"
            ),
            "404",
        ),
        (huge, "431"),
    ];
    for (request, status) in cases {
        let mut s = server.raw();
        // The 431 case may be answered before all of it is written; that is fine.
        let _ = s.write_all(request.as_bytes());
        let answer = read_response(&mut s);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "expected {status} for {:?}, got {answer}",
            &request[..request.len().min(80)]
        );
        if status == "426" {
            assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"));
        }
    }
    // Still serving.
    let mut client = server.client("r");
    client.send("still here".into()).unwrap();
}
