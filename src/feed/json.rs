//! JSON feeds. A document (array, single object, or object with the array at
//! `--records a.b`) is walked by a serde seed that materializes one record at a time,
//! so memory is bounded by the largest record, not by the file. NDJSON is read line by
//! line, and a malformed line is a skipped row rather than the end of the read.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, Read};
use std::path::Path;
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{deliver, fields, FeedError, Fields, Location, Sink, Skip};

/// Counts newlines as serde_json pulls bytes, so records can be reported by line.
struct LineCounter<R> {
    inner: R,
    line: Rc<Cell<u64>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let newlines = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        self.line.set(self.line.get() + newlines);
        Ok(n)
    }
}

/// Shared state of one document walk.
struct Walk<'a> {
    path: &'a Path,
    key: &'a [&'a str],
    sink: &'a mut dyn Sink,
    line: Rc<Cell<u64>>,
    index: u64,
    found: bool,
    /// A sink error stops the walk; serde only carries strings, so it waits here.
    abort: Option<FeedError>,
    fields: Fields,
    values: Vec<String>,
}

impl Walk<'_> {
    fn record(&mut self, value: &Value) -> Result<(), String> {
        self.index += 1;
        self.values.clear();
        fields::flatten_json(&mut self.fields, value);
        fields::values_at(value, self.key, &mut self.values);
        let location = Location::Record {
            index: self.index,
            line: self.line.get(),
        };
        deliver(self.path, self.sink, location, &self.fields, &self.values).map_err(|e| {
            let msg = e.to_string();
            self.abort = Some(e);
            msg
        })
    }
}

pub(super) fn read_document<R: Read>(
    path: &Path,
    reader: R,
    key: &[&str],
    records: Option<&str>,
    sink: &mut dyn Sink,
) -> Result<(), FeedError> {
    let line = Rc::new(Cell::new(1));
    let counted = LineCounter {
        inner: reader,
        line: line.clone(),
    };
    let records_path: Vec<&str> = records
        .map(|r| r.split('.').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut walk = Walk {
        path,
        key,
        sink,
        line,
        index: 0,
        found: false,
        abort: None,
        fields: Fields::default(),
        values: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_reader(counted);
    let result = Seed {
        walk: &mut walk,
        at: &records_path,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(e) = walk.abort.take() {
        return Err(e);
    }
    result.map_err(|e| FeedError::Json {
        file: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    if !walk.found {
        return Err(FeedError::RecordsPath {
            file: path.to_path_buf(),
            path: records.unwrap_or("").to_string(),
        });
    }
    Ok(())
}

/// Descends `at` (the `--records` path), then treats what it finds as the records.
struct Seed<'w, 'a> {
    walk: &'w mut Walk<'a>,
    at: &'w [&'w str],
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records, a record object, or an object holding the records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.at.is_empty() {
            // The path goes on but this is an array: nothing here for us.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        self.walk.found = true;
        while let Some(v) = seq.next_element::<Value>()? {
            self.walk.record(&v).map_err(de::Error::custom)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.at.split_first() {
            None => {
                // A single record object.
                let v = Value::deserialize_map(map)?;
                self.walk.found = true;
                self.walk.record(&v).map_err(de::Error::custom)
            }
            Some((first, rest)) => {
                while let Some(k) = map.next_key::<String>()? {
                    if k == *first {
                        map.next_value_seed(Seed {
                            walk: &mut *self.walk,
                            at: rest,
                        })?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// serde_json has no public "Value from MapAccess"; this wraps the map back into a
/// deserializer so `Value` can read it.
trait FromMap {
    fn deserialize_map<'de, A: MapAccess<'de>>(map: A) -> Result<Value, A::Error>;
}

impl FromMap for Value {
    fn deserialize_map<'de, A: MapAccess<'de>>(map: A) -> Result<Value, A::Error> {
        serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

pub(super) fn read_lines<R: BufRead>(
    path: &Path,
    mut reader: R,
    key: &[&str],
    sink: &mut dyn Sink,
) -> Result<(), FeedError> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut record = Fields::default();
    let mut values = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| FeedError::Io {
                file: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let location = Location::Line(line_no);
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => {
                values.clear();
                fields::flatten_json(&mut record, &v);
                fields::values_at(&v, key, &mut values);
                deliver(path, sink, location, &record, &values)?;
            }
            Err(e) => sink.skip(Skip {
                file: path.to_path_buf(),
                location,
                reason: format!("malformed JSON: {e}"),
            })?,
        }
    }
}
