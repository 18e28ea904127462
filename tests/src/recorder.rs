//! A small HTTP service for the processing tests that records every call it
//! gets (HTTP/1.1 with keep-alive, a thread a connection): `/purge/flaky`
//! answers 503 the first time, `/purge/bad` 400, everything else 200;
//! `/slow/…` answers after 20 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Calls the service got: (path with query, when).
pub type Calls = Arc<Mutex<Vec<(String, Instant)>>>;

/// Serves on a free port, a thread a connection (keep-alive): `/purge/flaky` answers 503 the
/// first time, `/purge/bad` 400, everything else 200; every call is recorded.
pub fn recording_service() -> (u16, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls: Calls = Arc::default();
    let record = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let record = record.clone();
            std::thread::spawn(move || serve(stream, &record));
        }
    });
    (port, calls)
}

fn serve(mut stream: std::net::TcpStream, record: &Calls) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut calls = record.lock().unwrap();
            let before = calls.iter().filter(|(p, _)| *p == path).count();
            calls.push((path.clone(), Instant::now()));
            match (path.as_str(), before) {
                ("/purge/flaky", 0) => "503 Service Unavailable",
                ("/purge/bad", _) => "400 Bad Request",
                _ => "200 OK",
            }
        };
        if path.starts_with("/slow/") {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// Calls to exactly `path`.
pub fn count(calls: &Calls, path: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .count()
}

/// Calls to paths that start with `prefix`.
pub fn count_prefix(calls: &Calls, prefix: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .count()
}
