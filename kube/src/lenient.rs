//! [`Lenient`]: a watched object that may fail to parse. A single object the typed
//! deserializer rejects would otherwise fail the whole list, and with it every Service of
//! the cluster; wrapped, it becomes one [`Lenient::Invalid`] entry that is skipped and
//! counted while everything else keeps flowing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{de::DeserializeOwned, Deserialize, Deserializer};

#[derive(Clone, Debug, PartialEq)]
pub enum Lenient<K> {
    Valid(K),
    /// The object's metadata (as far as it parses) and why the object did not parse.
    /// Boxed: rare, and `ObjectMeta` would otherwise make every valid object bigger.
    Invalid {
        metadata: Box<ObjectMeta>,
        error: String,
    },
}

impl<K> Lenient<K> {
    pub fn valid(&self) -> Option<&K> {
        match self {
            Self::Valid(k) => Some(k),
            Self::Invalid { .. } => None,
        }
    }
}

impl<'de, K> Deserialize<'de> for Lenient<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        // The metadata is read first and separately, so even a broken object keeps the
        // name and resourceVersion the watch needs to track it. It is taken out of the
        // object and decoded once: the object is decoded without it (the typed
        // deserializers default a missing `metadata`) and gets it back after.
        let metadata = match value.as_object_mut().and_then(|o| o.remove("metadata")) {
            Some(m) => ObjectMeta::deserialize(m).map_err(|e| e.to_string()),
            None => Ok(ObjectMeta::default()),
        };
        match (metadata, K::deserialize(value)) {
            (Ok(metadata), Ok(mut k)) => {
                *k.metadata_mut() = metadata;
                Ok(Self::Valid(k))
            }
            (Ok(metadata), Err(e)) => Ok(Self::Invalid {
                metadata: Box::new(metadata),
                error: e.to_string(),
            }),
            // The typed deserializer would have failed on the metadata too.
            (Err(error), _) => Ok(Self::Invalid {
                metadata: Box::default(),
                error,
            }),
        }
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Lenient<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata for Lenient<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Valid(k) => k.metadata(),
            Self::Invalid { metadata, .. } => metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Valid(k) => k.metadata_mut(),
            Self::Invalid { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;

    use super::*;

    #[test]
    fn an_object_of_the_wrong_shape_keeps_its_name() {
        let text = r#"{"metadata":{"name":"web","namespace":"default","resourceVersion":"7"},
                      "spec":{"ports":[{"port":"eighty"}]}}"#;
        let parsed: Lenient<Service> = serde_json::from_str(text).unwrap();
        match parsed {
            Lenient::Invalid { metadata, error } => {
                assert_eq!(metadata.name.as_deref(), Some("web"));
                assert_eq!(metadata.resource_version.as_deref(), Some("7"));
                assert!(error.contains("invalid type"), "{error}");
            }
            Lenient::Valid(_) => panic!("a string port must not parse"),
        }
    }

    #[test]
    fn a_good_object_parses_with_unknown_fields() {
        let text = r#"{"metadata":{"name":"web"},"spec":{"clusterIP":"198.18.1.1","futureField":{"x":1}},"extra":true}"#;
        let parsed: Lenient<Service> = serde_json::from_str(text).unwrap();
        assert!(parsed.valid().is_some());
    }
}
