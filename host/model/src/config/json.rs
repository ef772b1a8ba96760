//! Typed, error-naming access to the JSON of config.json.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

pub(super) struct Ctx<'a> {
    pub path: &'a Path,
}

/// A JSON object with typed, error-naming getters.
pub(super) struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub prefix: &'a str,
    pub ctx: &'a Ctx<'a>,
}

impl Obj<'_> {
    pub(super) fn missing(&self, key: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: missing key \"{}{key}\"",
            self.ctx.path.display(),
            self.prefix
        )
    }
    pub(super) fn wrong(&self, key: &str, what: &str, v: &Value) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: \"{}{key}\" must be {what}, found {v}",
            self.ctx.path.display(),
            self.prefix
        )
    }
    pub(super) fn req_i64(&self, key: &str) -> Result<i64> {
        self.opt_i64(key)?.ok_or_else(|| self.missing(key))
    }
    pub(super) fn opt_i64(&self, key: &str) -> Result<Option<i64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an integer", v)),
        }
    }
    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }
    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a boolean", v)),
        }
    }
    pub(super) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }
}

pub(super) fn opt_i64(v: Option<&Value>, path: &Path, key: &str) -> Result<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).with_context(|| {
            format!(
                "{}: \"{key}\" must be an integer, found {v}",
                path.display()
            )
        }),
    }
}

pub(super) fn i64_list(v: &Value, path: &Path, key: &str) -> Result<Vec<i64>> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>())
        .with_context(|| {
            format!(
                "{}: \"{key}\" must be a list of integers, found {v}",
                path.display()
            )
        })
}

/// An id or a list of ids (eos_token_id takes both forms).
pub(super) fn token_ids(v: Option<&Value>, path: &Path, key: &str) -> Result<Vec<i64>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(list @ Value::Array(_)) => i64_list(list, path, key),
        Some(x) => Ok(vec![x.as_i64().with_context(|| {
            format!(
                "{}: \"{key}\" must be an id or a list of ids, found {x}",
                path.display()
            )
        })?]),
    }
}
