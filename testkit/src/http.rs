//! A minimal HTTP/1.1 file server on a loopback port, for `ADD https?://…` tests: it serves
//! fixed bodies by path with a fixed `Last-Modified`, and 404 for anything else.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// A running server; it stops accepting when dropped (the listener thread is detached).
pub struct FileServer {
    addr: SocketAddr,
}

/// The `Last-Modified` every response carries.
pub const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

impl FileServer {
    /// Serves `files` (URL path → body).
    pub fn start(files: Vec<(&str, Vec<u8>)>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let files: Arc<HashMap<String, Vec<u8>>> =
            Arc::new(files.into_iter().map(|(p, b)| (p.to_owned(), b)).collect());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let files = Arc::clone(&files);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("cloning a socket"));
                    let mut request = String::new();
                    if reader.read_line(&mut request).is_err() {
                        return;
                    }
                    // Headers up to the blank line.
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("/");
                    let response = match files.get(path) {
                        Some(body) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                                body.len()
                            );
                            [head.into_bytes(), body.clone()].concat()
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    };
                    let _ = stream.write_all(&response);
                });
            }
        });
        FileServer { addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
