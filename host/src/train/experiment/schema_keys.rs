//! The experiment schema's keys, read from the types themselves: a
//! deserializer that answers every request with a placeholder and records
//! the key path and the type asked for. The range tests use it to find every
//! numeric setting, so a new one cannot be added without a range.

use std::cell::RefCell;
use std::rc::Rc;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::schema::Experiment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numeric {
    Integer,
    Float,
}

/// Every numeric key of the experiment schema as a [`super::validate::RANGES`]
/// pattern (`plugins.*.limits.memory_mb`, `optim.betas[]`), with its type.
pub fn numeric_keys() -> Vec<(String, Numeric)> {
    let found = Rc::new(RefCell::new(Vec::new()));
    let probe = Probe {
        path: String::new(),
        found: Rc::clone(&found),
    };
    if let Err(e) = Experiment::deserialize(probe) {
        panic!("the schema probe failed: {e}");
    }
    let mut keys = found.borrow().clone();
    keys.sort_by(|a: &(String, Numeric), b| a.0.cmp(&b.0));
    keys.dedup();
    keys
}

struct Probe {
    path: String,
    found: Rc<RefCell<Vec<(String, Numeric)>>>,
}

impl Probe {
    fn child(&self, suffix: &str) -> Probe {
        let path = if self.path.is_empty() || suffix.starts_with('[') {
            format!("{}{suffix}", self.path)
        } else {
            format!("{}.{suffix}", self.path)
        };
        Probe {
            path,
            found: Rc::clone(&self.found),
        }
    }

    fn record(&self, kind: Numeric) {
        self.found.borrow_mut().push((self.path.clone(), kind));
    }
}

/// Keys of a struct (its field names) or of a map (one user-chosen name, `*`).
struct Entries {
    probe: Probe,
    keys: Vec<&'static str>,
    next: usize,
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(k) = self.keys.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(StrDeserializer::<Error>::new(k)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let k = self.keys[self.next];
        self.next += 1;
        seed.deserialize(self.probe.child(k))
    }
}

/// `n` elements of an array, each probed as `[]`.
struct Elements {
    probe: Probe,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.probe.child("[]")).map(Some)
    }
}

/// The first variant of an enum, as a unit variant.
struct FirstVariant(&'static str);

impl<'de> de::EnumAccess<'de> for FirstVariant {
    type Error = Error;
    type Variant = UnitOnly;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, UnitOnly), Error> {
        let v = seed.deserialize(self.0.into_deserializer())?;
        Ok((v, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> de::VariantAccess<'de> for UnitOnly {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, Error> {
        Err(de::Error::custom("the probe takes unit variants only"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("the probe takes unit variants only"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom("the probe takes unit variants only"))
    }
}

macro_rules! integers {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.record(Numeric::Integer);
            visitor.visit_u64(1)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Error;

    /// Free-form values (a plugin's own config): nothing of ours inside.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    integers!(
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Numeric::Float);
        visitor.visit_f64(1.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record(Numeric::Float);
        visitor.visit_f64(1.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("x")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("x")
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Elements {
            probe: self,
            left: 1,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Elements {
            probe: self,
            left: len,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            probe: self,
            keys: vec!["*"],
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            probe: self,
            keys: fields.to_vec(),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(FirstVariant(variants[0]))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct newtype_struct
        tuple_struct identifier ignored_any
    }
}
