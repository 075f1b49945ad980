//! Label and field selectors, in the full Kubernetes syntax.

use crate::model::Labels;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),!h,i`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {}

impl LabelSelector {
    pub fn parse(_input: &str) -> Result<Self, SelectorError> {
        todo!("render helper")
    }
    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        todo!("render helper")
    }
    pub fn matches(&self, _labels: &Labels) -> bool {
        todo!("render helper")
    }
}

/// A parsed field selector; `metadata.name` and `metadata.namespace` are the fields served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {}

impl FieldSelector {
    pub fn parse(_input: &str) -> Result<Self, SelectorError> {
        todo!("render helper")
    }
    /// `namespace` is `None` for cluster-scoped objects.
    pub fn matches(&self, _namespace: Option<&str>, _name: &str) -> bool {
        todo!("render helper")
    }
}
