//! Reading named parameters, from WebSocket JSON or from HTTP query strings
//! (where every value arrives as a string).

use serde_json::Value;

use crate::codes;
use crate::RpcError;

pub(super) struct Params<'a>(pub(super) &'a Value);

fn invalid(name: &str, expected: &str) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS).because(format!("`{name}` must be {expected}"), Some(name))
}

/// A required parameter that is absent, in Deribit's words.
fn missing(name: &str) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS).because("value required", Some(name))
}

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn str(&self, name: &str) -> Result<&str, RpcError> {
        self.opt_str(name)?.ok_or_else(|| missing(name))
    }

    pub(super) fn opt_str(&self, name: &str) -> Result<Option<&str>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(name, "a string")),
        }
    }

    pub(super) fn opt_i64(&self, name: &str) -> Result<Option<i64>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(name, "an integer")),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| invalid(name, "an integer")),
            Some(_) => Err(invalid(name, "an integer")),
        }
    }

    pub(super) fn u64(&self, name: &str) -> Result<u64, RpcError> {
        self.opt_u64(name)?.ok_or_else(|| missing(name))
    }

    pub(super) fn opt_u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.opt_i64(name)? {
            None => Ok(None),
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| invalid(name, "a non-negative integer")),
        }
    }

    pub(super) fn opt_f64(&self, name: &str) -> Result<Option<f64>, RpcError> {
        let n = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.parse::<f64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(invalid(name, "a number")),
        }
    }

    pub(super) fn opt_bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(_) => Err(invalid(name, "true or false")),
        }
    }

    /// A list of strings (`channels`): a JSON array, or a comma-separated string.
    pub(super) fn strings(&self, name: &str) -> Result<Vec<String>, RpcError> {
        match self.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(name, "a list of strings"))
                })
                .collect(),
            Some(Value::String(s)) => Ok(s.split(',').map(str::to_owned).collect()),
            _ => Err(invalid(name, "a list of strings")),
        }
    }
}
