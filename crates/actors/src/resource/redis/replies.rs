//! Decoding stream replies by hand, so field order is kept and an unexpected
//! shape is an error, never a panic.

use redis::{ErrorKind, RedisError as DriverError, Value};

/// One stream entry: its id and its fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// `<ms>-<seq>`.
    pub id: String,
    /// Field/value pairs, as written.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    /// The first value of `field`.
    pub fn field(&self, field: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.as_slice())
    }
}

fn unexpected(what: &'static str) -> DriverError {
    (ErrorKind::Parse, what).into()
}

pub(super) fn text(value: Value) -> Result<String, DriverError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| unexpected("a non-UTF-8 stream id or name"))
        }
        Value::SimpleString(s) => Ok(s),
        _ => Err(unexpected("a string where the reply should have one")),
    }
}

fn bytes(value: Value) -> Result<Vec<u8>, DriverError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        _ => Err(unexpected("a field value that is not a string")),
    }
}

pub(super) fn list(value: Value) -> Result<Vec<Value>, DriverError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unexpected("a list where the reply should have one")),
    }
}

/// `[id, [field, value, ...]]`; a deleted entry has no fields (nil).
pub(super) fn entry(value: Value) -> Result<StreamEntry, DriverError> {
    let mut parts = list(value)?.into_iter();
    let (Some(id), Some(body)) = (parts.next(), parts.next()) else {
        return Err(unexpected("a stream entry without id and fields"));
    };
    let mut flat = list(body)?.into_iter();
    let mut fields = Vec::new();
    while let Some(name) = flat.next() {
        let value = flat
            .next()
            .ok_or_else(|| unexpected("a field without a value"))?;
        fields.push((text(name)?, bytes(value)?));
    }
    Ok(StreamEntry {
        id: text(id)?,
        fields,
    })
}

pub(super) fn entries(value: Value) -> Result<Vec<StreamEntry>, DriverError> {
    list(value)?.into_iter().map(entry).collect()
}

/// `XREADGROUP`: per stream, its entries (RESP2 array or RESP3 map; nil when
/// the block timed out).
pub(super) fn streams(value: Value) -> Result<Vec<(String, Vec<StreamEntry>)>, DriverError> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        other => list(other)?
            .into_iter()
            .map(|pair| {
                let mut parts = list(pair)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(unexpected("a stream without name and entries")),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    pairs
        .into_iter()
        .map(|(name, body)| Ok((text(name)?, entries(body)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_read_reply_keeps_streams_entries_and_field_order() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("b"), bulk("2"), bulk("a"), bulk("1")]),
            ])]),
        ])]);
        let parsed = streams(reply).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "s");
        let e = &parsed[0].1[0];
        assert_eq!(e.id, "1-0");
        assert_eq!(
            e.fields,
            vec![("b".into(), b"2".to_vec()), ("a".into(), b"1".to_vec())]
        );
        assert_eq!(e.field("a"), Some(&b"1"[..]));
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        assert!(streams(Value::Int(3)).is_err());
        assert!(streams(Value::Array(vec![Value::Array(vec![bulk("s")])])).is_err());
        assert!(entry(Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("lonely")])
        ]))
        .is_err());
        assert!(entry(Value::Array(vec![
            Value::BulkString(vec![0xff]),
            Value::Nil
        ]))
        .is_err());
        assert_eq!(streams(Value::Nil).unwrap(), vec![]);
    }
}
