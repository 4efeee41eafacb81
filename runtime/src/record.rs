//! The record: one example's named text fields. A leaf module, so that data loading, built-in
//! tasks, rewards and rollouts can all name it without importing one another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One example: named text fields (`prompt`, `solution`, `answer`, `chosen`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    fields: BTreeMap<String, String>,
}

/// A field a record does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record has no field `{field}` (fields: {})", available.join(", "))]
pub struct MissingField {
    pub field: String,
    pub available: Vec<String>,
}

impl Record {
    pub fn new(fields: BTreeMap<String, String>) -> Self {
        Record { fields }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub fn insert(&mut self, name: &str, value: String) {
        self.fields.insert(name.to_string(), value);
    }

    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// The field, or an error naming it and the fields that exist.
    pub fn require(&self, name: &str) -> Result<&str, MissingField> {
        self.get(name).ok_or_else(|| MissingField {
            field: name.to_string(),
            available: self.fields.keys().cloned().collect(),
        })
    }
}
