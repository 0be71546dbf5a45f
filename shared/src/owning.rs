//! Owned strings and byte buffers decoded without bincode's zeroed buffer.
//!
//! bincode's serde decoder answers `deserialize_string` (what `String` asks for) by decoding a
//! `Vec<u8>` of the string's length, zero-filled with `calloc` and then overwritten, and
//! `deserialize_byte_buf` the same way. glibc's `calloc` skips its per-thread cache, so every
//! `String` input of a typed task paid the allocator's slow path twice (allocation and free):
//! 6% of a worker's time on B9. Its `deserialize_str` and `deserialize_bytes` instead lend a
//! slice of the frame, already checked.
//!
//! [`Owning`] wraps a deserializer so that a request for an owned string or byte buffer is
//! served from that borrowed slice, copied once (`to_owned`), and handed to the visitor as
//! the owned value it asked for: the visitor sees exactly the calls it would have seen, with
//! the same values. The wrapper follows the value down (sequences, maps, options, newtypes,
//! enums), so strings inside structs and vectors take the same path. It changes nothing on the
//! wire; `codec_tests` checks it against bincode's own decoder.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use std::fmt;

#[cfg(test)]
thread_local! {
    /// How many owned strings and buffers this thread copied from lent slices.
    pub(crate) static LENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A deserializer whose owned strings and byte buffers are copied from borrowed slices.
pub struct Owning<D>(pub D);

/// A seed (an element, key, value or variant payload) deserialized through [`Owning`].
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Owning(d))
    }
}

/// Forwards `deserialize_*` methods whose visitor may be handed a nested deserializer or
/// access (wrapped), or none (passed as is).
macro_rules! forward {
    (wrap: $($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $name<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Result<V::Value, D::Error> {
            self.0.$name($($arg,)* Wrap(v))
        }
    )*};
    (plain: $($name:ident),* $(,)?) => {$(
        fn $name<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            self.0.$name(v)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Owning<D> {
    type Error = D::Error;

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_str(OwnedStr(v))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_bytes(OwnedBytes(v))
    }

    forward!(wrap:
        deserialize_any(), deserialize_option(), deserialize_seq(), deserialize_map(),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    );
    forward!(plain:
        deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64,
        deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64,
        deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char, deserialize_str,
        deserialize_bytes, deserialize_unit, deserialize_identifier, deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, v)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Turns a lent string into the owned one the visitor asked for.
struct OwnedStr<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OwnedStr<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        #[cfg(test)]
        LENT.set(LENT.get() + 1);
        self.0.visit_string(s.to_owned())
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.0.visit_string(s)
    }
}

/// Turns lent bytes into the owned buffer the visitor asked for.
struct OwnedBytes<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OwnedBytes<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<V::Value, E> {
        #[cfg(test)]
        LENT.set(LENT.get() + 1);
        self.0.visit_byte_buf(b.to_vec())
    }
    fn visit_byte_buf<E: de::Error>(self, b: Vec<u8>) -> Result<V::Value, E> {
        self.0.visit_byte_buf(b)
    }
}

/// A visitor whose nested deserializers and accesses are wrapped in turn.
struct Wrap<V>(V);

macro_rules! visit {
    ($($name:ident($ty:ty)),* $(,)?) => {$(
        fn $name<E: de::Error>(self, x: $ty) -> Result<V::Value, E> {
            self.0.$name(x)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(Owning(d))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(Owning(d))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Access(seq))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Access(map))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Access(data))
    }
}

/// A sequence, map, enum or variant whose parts are deserialized through [`Owning`].
struct Access<A>(A);

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Access(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(v))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Wrap(v))
    }
}
