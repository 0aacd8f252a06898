//! Maps in grammar and space files whose keys must be unique: RON itself
//! lets a repeated key silently replace the first (a nonterminal defined
//! twice, a task parameter given twice), so these read the map by hand.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// `#[serde(deserialize_with = "unique_keys")]`: a map that refuses a key
/// it has already seen (RON points the error at the repeat).
pub fn unique_keys<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    struct Unique<K, V>(PhantomData<(K, V)>);

    impl<'de, K, V> Visitor<'de> for Unique<K, V>
    where
        K: Deserialize<'de> + Ord + fmt::Display,
        V: Deserialize<'de>,
    {
        type Value = BTreeMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<K>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "`{key}` is given twice; each key may appear once"
                    )));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    d.deserialize_map(Unique(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Doc {
        #[serde(deserialize_with = "unique_keys")]
        m: BTreeMap<String, f64>,
    }

    #[test]
    fn a_repeated_key_is_refused_where_it_repeats() {
        let ok: Doc = ron::from_str(r#"(m: {"a": 1, "b": 2})"#).unwrap();
        assert_eq!(ok.m.len(), 2);
        let e = ron::from_str::<Doc>("(m: {\"a\": 1,\n \"a\": 2})").unwrap_err();
        assert!(e.to_string().contains("`a` is given twice"), "{e}");
        assert_eq!(e.position.line, 2);
    }
}
