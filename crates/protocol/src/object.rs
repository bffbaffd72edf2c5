//! "A JSON object, and only an object": serde's derived `Deserialize` for a
//! struct also accepts a JSON array of its fields in order
//! (`["alice","correct horse"]` for `{"username","password"}`), which the
//! protocol does not allow anywhere (docs/protocol.md). [`Object`] wraps a
//! type so that only a JSON object deserialises into it. Found by fuzzing
//! (fuzz/regressions/rest_bodies/seed-array-credentials).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

/// `T`, deserialised from a JSON object only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::Credentials;

    #[test]
    fn objects_only() {
        let ok: Object<Credentials> =
            serde_json::from_str(r#"{"username":"alice","password":"correct horse"}"#).unwrap();
        assert_eq!(ok.0.username, "alice");
        let e = serde_json::from_str::<Object<Credentials>>(r#"["alice","correct horse"]"#)
            .unwrap_err();
        assert!(e.to_string().contains("a JSON object"), "{e}");
        assert!(
            serde_json::from_str::<Credentials>(r#"["alice","correct horse"]"#).is_ok(),
            "what the wrapper exists for: serde alone takes the array"
        );
        assert!(serde_json::from_str::<Object<Credentials>>("42").is_err());
        assert!(serde_json::from_str::<Object<Credentials>>(r#"{"username":"alice"}"#).is_err());
    }
}
