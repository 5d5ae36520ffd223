//! The fake server's state: objects, the change history watches replay from, and the open
//! watches with their selectors.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::Resource;

/// Changes kept for replay; past that the older half is compacted away.
const MAX_HISTORY: usize = 8192;
/// Requests kept in the [`super::FakeApi::requests`] log; past that the older half is
/// dropped.
const MAX_REQUEST_LOG: usize = 8192;

/// A parsed `labelSelector` / `fieldSelector`.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    absent: Vec<String>,
    equal: Vec<(String, String)>,
    name: Option<String>,
}

impl Filter {
    pub(super) fn parse(query: &BTreeMap<String, String>) -> Self {
        let mut f = Filter::default();
        for term in query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if let Some(key) = term.strip_prefix('!') {
                f.absent.push(key.to_owned());
            } else if let Some((k, v)) = term.split_once('=') {
                f.equal.push((k.to_owned(), v.to_owned()));
            }
        }
        if let Some(fs) = query.get("fieldSelector") {
            f.name = fs.strip_prefix("metadata.name=").map(str::to_owned);
        }
        f
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.absent.iter().all(|k| labels.get(k).is_none())
            && self
                .equal
                .iter()
                .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v))
            && self
                .name
                .as_ref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    }
}

pub(super) struct Watcher {
    pub(super) resource: Resource,
    pub(super) filter: Filter,
    pub(super) tx: mpsc::Sender<String>,
}

impl Watcher {
    /// Queues a line; false when the watch is gone or too far behind (then it is dropped,
    /// which ends its stream, and the client resumes from its last resourceVersion).
    pub(super) fn send(&self, line: String) -> bool {
        self.tx.try_send(line).is_ok()
    }
}

pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) resource: Resource,
    before: Option<Value>,
    after: Option<Value>,
}

pub(super) type ObjectKey = (Resource, String, String);

#[derive(Default)]
pub(super) struct ApiState {
    pub(super) rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub(super) compacted: u64,
    pub(super) objects: BTreeMap<ObjectKey, Value>,
    pub(super) history: Vec<Change>,
    pub(super) watchers: Vec<Watcher>,
    /// "list services", "watch services 17", ... in arrival order.
    pub(super) requests: Vec<String>,
}

impl ApiState {
    pub(super) fn log_request(&mut self, request: String) {
        if self.requests.len() >= MAX_REQUEST_LOG {
            self.requests.drain(..MAX_REQUEST_LOG / 2);
        }
        self.requests.push(request);
    }

    pub(super) fn record(
        &mut self,
        resource: Resource,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let change = Change {
            rv: self.rv,
            resource,
            before,
            after,
        };
        self.watchers.retain(|w| {
            if w.resource != change.resource {
                return true;
            }
            match event_for(&w.filter, &change) {
                Some(line) => w.send(line),
                None => true,
            }
        });
        self.history.push(change);
        if self.history.len() > MAX_HISTORY {
            let dropped: Vec<Change> = self.history.drain(..MAX_HISTORY / 2).collect();
            if let Some(last) = dropped.last() {
                self.compacted = self.compacted.max(last.rv);
            }
        }
    }
}

pub(super) fn gone() -> String {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version"}})
    .to_string()
}

/// The watch event a watcher with `filter` sees for a change, if any: objects moving into
/// or out of a selector appear as ADDED / DELETED, like the real API server's.
pub(super) fn event_for(filter: &Filter, c: &Change) -> Option<String> {
    let was = c.before.as_ref().is_some_and(|o| filter.matches(o));
    let is = c.after.as_ref().is_some_and(|o| filter.matches(o));
    let (kind, obj) = match (was, is) {
        (false, true) => ("ADDED", c.after.clone()),
        (true, true) => ("MODIFIED", c.after.clone()),
        (true, false) => ("DELETED", c.after.clone().or_else(|| c.before.clone())),
        (false, false) => return None,
    };
    let mut obj = obj?;
    obj["metadata"]["resourceVersion"] = json!(c.rv.to_string());
    Some(json!({"type": kind, "object": obj}).to_string())
}
