//! Rendering a record into its answer context, `k1=v1|k2=v2…`, exactly as SPEC §2
//! prints it. This runs once per record at compile time; serving copies the bytes.
//!
//! Nested objects become dotted keys, arrays of scalars are joined with `,`, arrays
//! holding objects or arrays are indexed (`files[0].MD5`). `|`, CR and LF are
//! percent-encoded in keys and values, and `=` in keys, so no record can break the
//! line framing or the `key=value` split on the client side.

use serde_json::Value;

/// Append one `key=value` pair, with a leading `|` unless it is the first.
pub fn push_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    if !out.is_empty() {
        out.push(b'|');
    }
    escape_into(out, key, true);
    out.push(b'=');
    escape_into(out, value, false);
}

/// Percent-encode the bytes that would break framing.
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8], is_key: bool) {
    for &b in bytes {
        match b {
            b'|' => out.extend_from_slice(b"%7C"),
            b'\r' => out.extend_from_slice(b"%0D"),
            b'\n' => out.extend_from_slice(b"%0A"),
            b'=' if is_key => out.extend_from_slice(b"%3D"),
            _ => out.push(b),
        }
    }
}

/// Render a JSON record (normally an object) into `out`.
pub fn render_json(out: &mut Vec<u8>, record: &Value) {
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

fn flatten(out: &mut Vec<u8>, key: &mut Vec<u8>, v: &Value) {
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
            push_pair(out, key, &joined);
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
            push_pair(out, key, &value);
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

    #[test]
    fn escapes_framing_bytes() {
        let mut out = Vec::new();
        push_pair(&mut out, b"a=b|c", b"x|y\r\nz=1");
        assert_eq!(out, b"a%3Db%7Cc=x%7Cy%0D%0Az=1");
    }

    #[test]
    fn scalar_record_is_named_value() {
        let mut out = Vec::new();
        render_json(&mut out, &serde_json::json!("evil.com"));
        assert_eq!(out, b"value=evil.com");
    }

    #[test]
    fn nested_arrays_are_indexed() {
        let mut out = Vec::new();
        render_json(
            &mut out,
            &serde_json::json!({"m": [[1, 2], {"a": "b"}], "e": []}),
        );
        assert_eq!(String::from_utf8_lossy(&out), "m[0]=1,2|m[1].a=b|e=");
    }
}
