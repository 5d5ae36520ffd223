//! Serving the fake API over HTTP/1.1 on 127.0.0.1: list and watch requests, with
//! selectors, replay from a resourceVersion and 410 Gone.

use std::{collections::BTreeMap, io, sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
};

use super::{
    history::{event_for, gone, Filter, Watcher},
    FakeApi, Resource,
};

/// Largest request head read before the connection is dropped.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait for a free place.
const MAX_CONNECTIONS: usize = 64;
/// Events queued per watch; a watch that falls further behind is closed.
const WATCH_QUEUE: usize = 4096;

impl FakeApi {
    /// Listens on 127.0.0.1 (a free port, returned) and serves on the current tokio
    /// runtime until that runtime shuts down.
    pub async fn serve(&self) -> io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let api = self.clone();
        let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As the real API server (Go sets it on every TCP connection): without it,
                // Nagle holds a watch event back until the previous one is acknowledged,
                // which the client's delayed ACK can put off for 40 ms.
                let _ = stream.set_nodelay(true);
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let api = api.clone();
                tokio::spawn(async move {
                    api.handle(stream).await;
                    drop(place);
                });
            }
        });
        Ok(port)
    }

    async fn handle(self, mut stream: TcpStream) {
        let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await
        else {
            return;
        };
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let Some(resource) = Resource::from_path(path) else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        };
        let filter = Filter::parse(&query);
        if query.get("watch").map(String::as_str) == Some("true") {
            self.watch(stream, resource, filter, &query).await;
        } else {
            self.list(stream, resource, &filter).await;
        }
    }

    async fn watch(
        self,
        mut stream: TcpStream,
        resource: Resource,
        filter: Filter,
        query: &BTreeMap<String, String>,
    ) {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, mut rx) = mpsc::channel(WATCH_QUEUE);
        {
            let mut s = self.lock();
            s.log_request(format!("watch {} {from}", resource.plural()));
            if from < s.compacted {
                let _ = tx.try_send(gone());
            } else {
                let replay: Vec<String> = s
                    .history
                    .iter()
                    .filter(|c| c.resource == resource && c.rv > from)
                    .filter_map(|c| event_for(&filter, c))
                    .collect();
                let watcher = Watcher {
                    resource,
                    filter,
                    tx,
                };
                // A replay longer than the queue ends the stream at once; the client
                // resumes from what it received.
                if replay.into_iter().all(|line| watcher.send(line)) {
                    s.watchers.push(watcher);
                }
            }
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while let Some(line) = rx.recv().await {
            if stream
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn list(self, mut stream: TcpStream, resource: Resource, filter: &Filter) {
        let body = {
            let mut s = self.lock();
            s.log_request(format!("list {}", resource.plural()));
            // Serialized straight from the stored objects: copying 10,000 objects into a
            // `Value` first made this server, not the client it serves, most of a
            // benchmark's list time. The bytes are the same.
            let items: Vec<ListItem<'_>> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == resource && filter.matches(o))
                .map(|(_, o)| ListItem(o))
                .collect();
            let list = List {
                api_version: resource.api_version(),
                items,
                kind: format!("{}List", resource.kind()),
                metadata: json!({"resourceVersion": s.rv.to_string()}),
            };
            serde_json::to_string(&list).expect("JSON values serialize")
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// A list response, its keys in the order `json!` would give them (sorted).
#[derive(serde::Serialize)]
struct List<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    items: Vec<ListItem<'a>>,
    kind: String,
    metadata: Value,
}

/// A stored object as a list item: without kind and apiVersion, as from the server.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if key != "kind" && key != "apiVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Reads up to the end of the request head; `None` if the client went away or the head
/// is too large.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD_BYTES {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
