//! One resource's objects as the watch delivers them, following kube-rs' relist protocol:
//! `Init` opens a buffer, `InitApply` fills it, `InitDone` swaps it in whole (dropping
//! what was deleted meanwhile), so a relist after a 410 Gone never shows a half-listed
//! store. Each update says what it touched, for the cache to mark dirty Services.

use std::collections::BTreeMap;

use kube::{runtime::watcher::Event, ResourceExt};

use crate::lenient::Lenient;

/// (namespace, name); namespace "" for cluster-scoped objects.
pub(super) type Key = (String, String);

/// `None` for an object without a name (the API never sends one; a hostile server might).
pub(super) fn key_of<K: kube::Resource>(obj: &K) -> Option<Key> {
    let name = obj.meta().name.clone().filter(|n| !n.is_empty())?;
    Some((obj.namespace().unwrap_or_default(), name))
}

/// One resource's objects, with kube-rs' relist protocol: `Init` opens a buffer,
/// `InitApply` fills it, `InitDone` swaps it in (dropping what was deleted meanwhile).
pub(super) struct Store<K> {
    pub(super) objects: BTreeMap<Key, Lenient<K>>,
    relisting: Option<BTreeMap<Key, Lenient<K>>>,
    /// A first complete list has been swapped in.
    pub(super) synced: bool,
}

// Lives only between a store update and the dirty marking that reads it.
#[allow(clippy::large_enum_variant)]
pub(super) enum Touched<K> {
    One {
        before: Option<Lenient<K>>,
        after: Option<Lenient<K>>,
    },
    Relisted {
        before: BTreeMap<Key, Lenient<K>>,
    },
    Nothing,
}

impl<K> Store<K>
where
    K: Clone,
    Lenient<K>: kube::Resource,
{
    pub(super) fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            relisting: None,
            synced: false,
        }
    }

    pub(super) fn apply(&mut self, event: Event<Lenient<K>>) -> Touched<K> {
        match event {
            Event::Apply(obj) => match key_of(&obj) {
                Some(key) => Touched::One {
                    before: self.objects.insert(key, obj.clone()),
                    after: Some(obj),
                },
                None => Touched::Nothing,
            },
            Event::Delete(obj) => match key_of(&obj) {
                Some(key) => Touched::One {
                    before: self.objects.remove(&key),
                    after: None,
                },
                None => Touched::Nothing,
            },
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                Touched::Nothing
            }
            Event::InitApply(obj) => {
                if let (Some(buffer), Some(key)) = (self.relisting.as_mut(), key_of(&obj)) {
                    buffer.insert(key, obj);
                }
                Touched::Nothing
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                self.synced = true;
                Touched::Relisted {
                    before: std::mem::replace(&mut self.objects, fresh),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::apis::meta::v1::ObjectMeta};
    use kube::Resource as _;

    use super::*;

    fn svc(name: &str, resource_version: &str) -> Lenient<Service> {
        Lenient::Valid(Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                resource_version: Some(resource_version.to_owned()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        })
    }

    fn key(name: &str) -> Key {
        ("default".to_owned(), name.to_owned())
    }

    fn names(store: &Store<Service>) -> Vec<&str> {
        store.objects.keys().map(|(_, n)| n.as_str()).collect()
    }

    fn resource_version(store: &Store<Service>, name: &str) -> Option<String> {
        store.objects[&key(name)].meta().resource_version.clone()
    }

    /// The initial list, as kube-rs' watcher delivers it.
    fn listed(objects: Vec<Lenient<Service>>) -> Store<Service> {
        let mut store = Store::new();
        store.apply(Event::Init);
        for obj in objects {
            store.apply(Event::InitApply(obj));
        }
        store.apply(Event::InitDone);
        store
    }

    #[test]
    fn apply_inserts_and_replaces_and_reports_before_and_after() {
        let mut store = listed(vec![]);
        let Touched::One { before, after } = store.apply(Event::Apply(svc("web", "1"))) else {
            panic!("an apply touches one object");
        };
        assert!(before.is_none());
        assert_eq!(after, Some(svc("web", "1")));
        let Touched::One { before, after } = store.apply(Event::Apply(svc("web", "2"))) else {
            panic!("an apply touches one object");
        };
        assert_eq!(before, Some(svc("web", "1")));
        assert_eq!(after, Some(svc("web", "2")));
        assert_eq!(resource_version(&store, "web").as_deref(), Some("2"));
    }

    #[test]
    fn the_newest_event_wins_whatever_its_resource_version() {
        // Ordering by resourceVersion is the watcher's job (it resumes from the last one it
        // saw); the store keeps what it was given last.
        let mut store = listed(vec![svc("web", "7")]);
        store.apply(Event::Apply(svc("web", "3")));
        assert_eq!(resource_version(&store, "web").as_deref(), Some("3"));
    }

    #[test]
    fn delete_removes_and_reports_what_was_there() {
        let mut store = listed(vec![svc("web", "1"), svc("db", "1")]);
        let Touched::One { before, after } = store.apply(Event::Delete(svc("web", "2"))) else {
            panic!("a delete touches one object");
        };
        assert_eq!(before, Some(svc("web", "1")));
        assert!(after.is_none());
        assert_eq!(names(&store), ["db"]);
        // Deleting what is not there touches it still (the cache re-checks the name).
        let Touched::One { before, .. } = store.apply(Event::Delete(svc("gone", "3"))) else {
            panic!("a delete touches one object");
        };
        assert!(before.is_none());
    }

    #[test]
    fn objects_without_a_name_are_ignored() {
        let mut store = listed(vec![svc("", "1")]);
        assert!(store.objects.is_empty());
        assert!(matches!(
            store.apply(Event::Apply(svc("", "2"))),
            Touched::Nothing
        ));
        assert!(matches!(
            store.apply(Event::Delete(svc("", "2"))),
            Touched::Nothing
        ));
    }

    #[test]
    fn synced_after_the_first_complete_list_only() {
        let mut store: Store<Service> = Store::new();
        assert!(!store.synced);
        store.apply(Event::Init);
        store.apply(Event::InitApply(svc("web", "1")));
        assert!(!store.synced);
        assert!(
            store.objects.is_empty(),
            "nothing shows before the list is complete"
        );
        assert!(matches!(
            store.apply(Event::InitDone),
            Touched::Relisted { .. }
        ));
        assert!(store.synced);
        assert_eq!(names(&store), ["web"]);
    }

    #[test]
    fn relist_swaps_in_whole_and_drops_what_was_deleted_meanwhile() {
        let mut store = listed(vec![svc("web", "1"), svc("old", "1")]);
        // A 410 Gone: kube-rs relists.
        assert!(matches!(store.apply(Event::Init), Touched::Nothing));
        assert!(matches!(
            store.apply(Event::InitApply(svc("web", "9"))),
            Touched::Nothing
        ));
        store.apply(Event::InitApply(svc("new", "9")));
        // Until the list is complete the store keeps the old objects, and stays synced.
        assert_eq!(names(&store), ["old", "web"]);
        assert!(store.synced);
        let Touched::Relisted { before } = store.apply(Event::InitDone) else {
            panic!("InitDone swaps the list in");
        };
        assert_eq!(
            before.keys().cloned().collect::<Vec<_>>(),
            [key("old"), key("web")]
        );
        assert_eq!(names(&store), ["new", "web"]);
        assert_eq!(resource_version(&store, "web").as_deref(), Some("9"));
    }

    #[test]
    fn init_apply_outside_a_relist_is_ignored() {
        let mut store = listed(vec![svc("web", "1")]);
        store.apply(Event::InitApply(svc("stray", "2")));
        assert_eq!(names(&store), ["web"]);
    }
}
