//! The first parsing stage: the file's structure as written, every value with its span.
//!
//! These types check only what TOML and serde can: keys, nesting and value types. Values
//! stay as written so that [`crate::validate`] can point at the one that is wrong.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub hijack: Option<Spanned<String>>,
    pub default: Option<Spanned<RawDefault>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

/// `default = "deny"` or a `[default]` table.
#[derive(Debug)]
pub(crate) enum RawDefault {
    Word(String),
    Table(RawDefaultTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaultTable {
    pub action: Option<Spanned<String>>,
    pub errno: Option<Spanned<String>>,
    pub log: Option<Spanned<bool>>,
}

/// One `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub comment: Option<Spanned<String>>,
    pub op: Option<Spanned<OneOrMany<OpWord>>>,
    pub proto: Option<Spanned<String>>,
    pub family: Option<Spanned<String>>,
    pub addr: Option<Spanned<OneOrMany<AddrWord>>>,
    pub port: Option<Spanned<OneOrMany<PortItem>>>,
    pub action: Option<Spanned<String>>,
    pub errno: Option<Spanned<String>>,
    pub log: Option<Spanned<bool>>,
}

impl<'de> Deserialize<'de> for RawDefault {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DefaultVisitor)
    }
}

struct DefaultVisitor;

impl<'de> Visitor<'de> for DefaultVisitor {
    type Value = RawDefault;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"allow\", \"deny\" or a table with `action`, `errno` and `log`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDefault, E> {
        Ok(RawDefault::Word(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDefault, A::Error> {
        RawDefaultTable::deserialize(MapAccessDeserializer::new(map)).map(RawDefault::Table)
    }
}

/// A value that may be given once or as an array: `op = "send"`, `op = ["send", "connect"]`.
#[derive(Debug)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<Spanned<T>>),
}

/// A scalar that may appear in a [`OneOrMany`].
pub(crate) trait Item: Sized {
    /// What one item is, for "expected …" messages.
    const EXPECTING: &'static str;

    fn from_str(s: &str) -> Option<Self>;

    fn from_int(i: i64) -> Option<Self>;
}

/// An operation name, checked in the second stage.
#[derive(Debug)]
pub(crate) struct OpWord(pub String);

/// An address, prefix or set name, checked in the second stage.
#[derive(Debug)]
pub(crate) struct AddrWord(pub String);

/// A port number or a `"first-last"` range, checked in the second stage.
#[derive(Debug)]
pub(crate) enum PortItem {
    Number(i64),
    Text(String),
}

impl Item for OpWord {
    const EXPECTING: &'static str = "an operation (connect, bind, listen, accept or send)";

    fn from_str(s: &str) -> Option<Self> {
        Some(OpWord(s.to_owned()))
    }

    fn from_int(_: i64) -> Option<Self> {
        None
    }
}

impl Item for AddrWord {
    const EXPECTING: &'static str =
        "an address, a prefix such as \"10.0.0.0/8\", or a named set as a string";

    fn from_str(s: &str) -> Option<Self> {
        Some(AddrWord(s.to_owned()))
    }

    fn from_int(_: i64) -> Option<Self> {
        None
    }
}

impl Item for PortItem {
    const EXPECTING: &'static str = "a port number or a \"first-last\" range string";

    fn from_str(s: &str) -> Option<Self> {
        Some(PortItem::Text(s.to_owned()))
    }

    fn from_int(i: i64) -> Option<Self> {
        Some(PortItem::Number(i))
    }
}

struct ItemVisitor<T>(PhantomData<T>);

impl<'de, T: Item> Visitor<'de> for ItemVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_str(v).ok_or_else(|| E::invalid_type(Unexpected::Str(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_int(v).ok_or_else(|| E::invalid_type(Unexpected::Signed(v), &self))
    }
}

macro_rules! deserialize_item {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(ItemVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_item!(OpWord, AddrWord, PortItem);

struct OneOrManyVisitor<T>(PhantomData<T>);

impl<'de, T: Item + Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
    type Value = OneOrMany<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, or an array of them", T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        T::deserialize(StrDeserializer::<E>::new(v)).map(OneOrMany::One)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match T::from_int(v) {
            Some(item) => Ok(OneOrMany::One(item)),
            None => Err(E::invalid_type(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<T>>()? {
            items.push(item);
        }
        Ok(OneOrMany::Many(items))
    }
}

impl<'de, T: Item + Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}
