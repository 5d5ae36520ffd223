//! [`Lenient`]: a watched object that may fail to parse. A single object the typed
//! deserializer rejects would otherwise fail the whole list, and with it every Service of
//! the cluster; wrapped, it becomes one [`Lenient::Invalid`] entry that is skipped and
//! counted while everything else keeps flowing.

use std::{borrow::Cow, fmt, marker::PhantomData};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{
    de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor},
    Deserialize, Deserializer,
};

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

/// serde_json's name for its raw-value newtype: asked for it, serde_json's own
/// deserializer hands over the object's text unparsed (feature `raw_value`); any other
/// deserializer treats it as an ordinary newtype.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl<'de, K> Deserialize<'de> for Lenient<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(RAW_VALUE_TOKEN, LenientVisitor(PhantomData))
    }
}

impl<K> Lenient<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    /// From the object's JSON text: typed straight from it (no `Value` tree in between),
    /// the careful way only when that fails.
    fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        match serde_json::from_str::<K>(text) {
            Ok(k) => Ok(Self::Valid(k)),
            Err(_) => Ok(Self::from_value(serde_json::from_str(text)?)),
        }
    }

    /// From a parsed object, keeping what can be kept of a broken one.
    fn from_value(mut value: serde_json::Value) -> Self {
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
                Self::Valid(k)
            }
            (Ok(metadata), Err(e)) => Self::Invalid {
                metadata: Box::new(metadata),
                error: e.to_string(),
            },
            // The typed deserializer would have failed on the metadata too.
            (Err(error), _) => Self::Invalid {
                metadata: Box::default(),
                error,
            },
        }
    }
}

/// Takes the object's text from serde_json's deserializer (`visit_map` with the raw-value
/// entry), or the object itself from any other (`visit_newtype_struct`, or `visit_map`
/// over its fields).
struct LenientVisitor<K>(PhantomData<K>);

impl<'de, K> Visitor<'de> for LenientVisitor<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    type Value = Lenient<K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(Lenient::from_value(serde_json::Value::deserialize(d)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(first) = map.next_key::<Cow<'de, str>>()? else {
            return Ok(Lenient::from_value(serde_json::Value::Object(
                Default::default(),
            )));
        };
        if first == RAW_VALUE_TOKEN {
            return map.next_value_seed(TextSeed(PhantomData));
        }
        // An object handed over field by field: gathered whole, then read as above.
        let mut object = serde_json::Map::new();
        object.insert(first.into_owned(), map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
        Ok(Lenient::from_value(serde_json::Value::Object(object)))
    }
}

/// Reads the object from its raw text where serde_json hands it over, without copying it.
struct TextSeed<K>(PhantomData<K>);

impl<'de, K> DeserializeSeed<'de> for TextSeed<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    type Value = Lenient<K>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K> Visitor<'de> for TextSeed<K>
where
    K: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    type Value = Lenient<K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object's JSON text")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Lenient::from_text(text).map_err(E::custom)
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

    /// As a list is read (serde_json's own deserializer: the raw-text path), a broken
    /// object among good ones is kept as invalid and the others parse.
    #[test]
    fn a_broken_object_in_a_list_spoils_only_itself() {
        let text = r#"[{"metadata":{"name":"a"},"spec":{"clusterIP":"198.18.1.1"}},
                       {"metadata":{"name":"b"},"spec":{"ports":"none"}},
                       {"metadata":{"name":"c"}}]"#;
        let parsed: Vec<Lenient<Service>> = serde_json::from_str(text).unwrap();
        let names: Vec<(Option<&str>, bool)> = parsed
            .iter()
            .map(|o| {
                let valid = o.valid().is_some();
                let meta = k8s_openapi::Metadata::metadata(o);
                (meta.name.as_deref(), valid)
            })
            .collect();
        assert_eq!(
            names,
            [(Some("a"), true), (Some("b"), false), (Some("c"), true)]
        );
    }

    /// A watch event whose object comes before its type is buffered by serde (not
    /// serde_json), which cannot hand over raw text: the object is read from the buffer.
    #[test]
    fn an_object_buffered_by_serde_parses_the_same() {
        #[derive(serde::Deserialize)]
        #[serde(tag = "type", content = "object")]
        enum Event {
            #[serde(rename = "ADDED")]
            Added(Lenient<Service>),
        }
        for text in [
            r#"{"object":{"metadata":{"name":"web"},"spec":{"clusterIP":"198.18.1.1"}},"type":"ADDED"}"#,
            r#"{"type":"ADDED","object":{"metadata":{"name":"web"},"spec":{"clusterIP":"198.18.1.1"}}}"#,
        ] {
            let Event::Added(parsed) = serde_json::from_str(text).unwrap();
            let svc = parsed.valid().expect("valid");
            assert_eq!(svc.metadata.name.as_deref(), Some("web"));
            let spec = svc.spec.as_ref().expect("spec");
            assert_eq!(spec.cluster_ip.as_deref(), Some("198.18.1.1"));
        }
        let bad =
            r#"{"object":{"metadata":{"name":"web"},"spec":{"ports":"none"}},"type":"ADDED"}"#;
        let Event::Added(parsed) = serde_json::from_str(bad).unwrap();
        assert!(parsed.valid().is_none());
        assert_eq!(
            k8s_openapi::Metadata::metadata(&parsed).name.as_deref(),
            Some("web")
        );
    }

    #[test]
    fn a_parsed_value_reads_as_its_text_does() {
        let value =
            serde_json::json!({"metadata":{"name":"web"},"spec":{"clusterIP":"198.18.1.1"}});
        let parsed: Lenient<Service> = serde_json::from_value(value).unwrap();
        assert!(parsed.valid().is_some());
    }
}
