//! A record's fields, flattened into `(key, value)` pairs in field order, the shape
//! both answer formats print: nested objects become dotted keys, arrays of scalars
//! are joined with `,`, arrays holding objects or arrays are indexed (`files[0].MD5`).
//! How the pairs are then encoded (percent-escaping for the TCP protocol, JSON for
//! HTTP) is not the reader's business.

use serde_json::Value;

/// The flattened fields of one record, in one buffer reused from record to record.
#[derive(Default, Debug)]
pub struct Fields {
    buf: Vec<u8>,
    /// (key start, key end = value start, value end) in `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl Fields {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let k = self.buf.len();
        self.buf.extend_from_slice(key);
        let v = self.buf.len();
        self.buf.extend_from_slice(value);
        self.spans.push((k, v, self.buf.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The pairs, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|&(k, v, e)| (&self.buf[k..v], &self.buf[v..e]))
    }
}

/// Flatten a JSON record (normally an object) into `out` (cleared first).
pub fn flatten_json(out: &mut Fields, record: &Value) {
    out.clear();
    let mut key = Vec::new();
    match record {
        Value::Object(_) => flatten(out, &mut key, record),
        // A scalar or array record has no field names; call it `value`.
        _ => {
            key.extend_from_slice(b"value");
            flatten(out, &mut key, record);
        }
    }
}

fn flatten(out: &mut Fields, key: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let len = key.len();
                if !key.is_empty() {
                    key.push(b'.');
                }
                key.extend_from_slice(k.as_bytes());
                flatten(out, key, child);
                key.truncate(len);
            }
        }
        Value::Array(items) if items.iter().all(is_scalar) => {
            let mut joined = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                scalar_into(&mut joined, item);
            }
            out.push(key, &joined);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = key.len();
                key.extend_from_slice(format!("[{i}]").as_bytes());
                flatten(out, key, item);
                key.truncate(len);
            }
        }
        scalar => {
            let mut value = Vec::new();
            scalar_into(&mut value, scalar);
            out.push(key, &value);
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// The text of a scalar: strings as they are, numbers and booleans as JSON writes
/// them, null as empty.
pub fn scalar_into(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Null => {}
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// Collect the values under a dotted key path. Arrays on the way (and at the end)
/// fan out, so `files.MD5` over `files: [{MD5}, {MD5}]` yields both digests.
pub fn values_at(v: &Value, path: &[&str], out: &mut Vec<String>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => {
            for item in items {
                values_at(item, path, out);
            }
        }
        (Value::Object(map), Some((first, rest))) => {
            if let Some(child) = map.get(*first) {
                values_at(child, rest, out);
            }
        }
        (Value::String(s), None) if !s.trim().is_empty() => out.push(s.clone()),
        (Value::Number(n), None) => out.push(n.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(f: &Fields) -> Vec<(String, String)> {
        f.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn scalar_record_is_named_value() {
        let mut f = Fields::default();
        flatten_json(&mut f, &serde_json::json!("evil.com"));
        assert_eq!(show(&f), vec![("value".into(), "evil.com".into())]);
    }

    #[test]
    fn nested_arrays_are_indexed() {
        let mut f = Fields::default();
        flatten_json(
            &mut f,
            &serde_json::json!({"m": [[1, 2], {"a": "b|c"}], "e": []}),
        );
        assert_eq!(
            show(&f),
            vec![
                ("m[0]".into(), "1,2".into()),
                ("m[1].a".into(), "b|c".into()),
                ("e".into(), "".into())
            ]
        );
    }
}
