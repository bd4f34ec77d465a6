//! Feed readers: JSON (array, single object, array at a path, NDJSON), CSV and plain
//! text, each turned into a stream of [`RawRecord`]s.
//!
//! A reader never holds the whole feed: JSON is walked with a serde seed that hands
//! over one record at a time, CSV and text are read row by row. Each record arrives
//! with its fields flattened (see [`fields`]) and the indicator values found under the
//! key field; kinds, normalization and how the fields are encoded in answers are the
//! compiler's business. Readers only read files: no network, no command line.
//!
//! Bad rows are skipped with a [`Skip`] naming file, line or record number and reason,
//! so an operator can find them; `--strict` turns the first skip into an error.

mod csv;
pub mod fields;
mod json;
mod text;

use std::fmt;
use std::path::{Path, PathBuf};

pub use fields::Fields;

/// Feed file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    Text,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown feed format `{s}` (json, ndjson, csv, text)"))
    }
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Json, Format::Ndjson, Format::Csv, Format::Text];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Text => "text",
        }
    }

    /// Guess from the extension, then from the first non-blank byte.
    pub fn detect(path: &Path) -> Result<Format, FeedError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => return Ok(Format::Json),
            Some("jsonl" | "ndjson") => return Ok(Format::Ndjson),
            Some("csv" | "tsv") => return Ok(Format::Csv),
            Some("txt" | "list") => return Ok(Format::Text),
            _ => {}
        }
        use std::io::Read;
        let mut head = [0u8; 512];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|source| FeedError::Io {
                file: path.to_path_buf(),
                source,
            })?;
        Ok(match head[..n].iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[' | b'{') => Format::Json,
            _ => Format::Text,
        })
    }
}

/// Where a record sits in its file, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Line(u64),
    Record { index: u64, line: u64 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(l) => write!(f, "line {l}"),
            Location::Record { index, line } => write!(f, "record {index} (line {line})"),
        }
    }
}

/// One record as read: its flattened fields and the raw values of its key field
/// (several when the field is an array).
pub struct RawRecord<'a> {
    pub location: Location,
    pub fields: &'a Fields,
    pub values: &'a [String],
}

/// A row that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub file: PathBuf,
    pub location: Location,
    pub reason: String,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.location,
            self.reason
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}, column {column}: malformed JSON: {reason}", file.display())]
    Json {
        file: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}: no records at path `{path}`", file.display())]
    RecordsPath { file: PathBuf, path: String },
    #[error("{}: CSV header has no column `{key}` (columns: {columns})", file.display())]
    MissingColumn {
        file: PathBuf,
        key: String,
        columns: String,
    },
    #[error("{}: {message}", file.display())]
    Csv { file: PathBuf, message: String },
    #[error("{skip} (--strict)")]
    Strict { skip: Skip },
    #[error("{}: more than {limit} records in one index; split the feed", file.display())]
    TooManyRecords { file: PathBuf, limit: u64 },
    #[error("{}: a {format} feed needs its indicator field named (-k FIELD)", file.display())]
    NoKey { file: PathBuf, format: &'static str },
}

/// How to read one feed file.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    pub format: Option<Format>,
    /// Dotted path of the indicator field (`mask`, `files.MD5`).
    pub key: String,
    /// Dotted path to the records array inside a JSON object (`response.Attribute`).
    pub records: Option<String>,
}

/// What the reader hands to its consumer per record. Returning a reason skips the row
/// (reported like any other bad row), returning `Err` aborts the read.
pub trait Sink {
    fn record(&mut self, record: RawRecord<'_>) -> Result<Option<String>, FeedError>;
    fn skip(&mut self, skip: Skip) -> Result<(), FeedError>;
}

/// Read a feed file, calling `sink` for every record and every skipped row.
pub fn read(path: &Path, opts: &ReadOptions, sink: &mut dyn Sink) -> Result<(), FeedError> {
    let format = match opts.format {
        Some(f) => f,
        None => Format::detect(path)?,
    };
    if opts.key.trim().is_empty() && format != Format::Text {
        return Err(FeedError::NoKey {
            file: path.to_path_buf(),
            format: format.name(),
        });
    }
    let io = |source| FeedError::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    read_from(path, reader, format, opts, sink)
}

/// Read a feed of `format` from `reader`; `path` names it in messages. What [`read`]
/// does once the file is open (and what the fuzz targets drive with bytes).
pub fn read_from(
    path: &Path,
    reader: impl std::io::BufRead,
    format: Format,
    opts: &ReadOptions,
    sink: &mut dyn Sink,
) -> Result<(), FeedError> {
    let key: Vec<&str> = opts.key.split('.').filter(|s| !s.is_empty()).collect();
    match format {
        Format::Json => json::read_document(path, reader, &key, opts.records.as_deref(), sink),
        Format::Ndjson => json::read_lines(path, reader, &key, sink),
        Format::Csv => csv::read(path, reader, &opts.key, sink),
        Format::Text => text::read(path, reader, &opts.key, sink),
    }
}

/// Pass a record to the sink and turn a rejected row into a reported skip.
fn deliver(
    path: &Path,
    sink: &mut dyn Sink,
    location: Location,
    fields: &Fields,
    values: &[String],
) -> Result<(), FeedError> {
    let verdict = if values.is_empty() {
        Some("key field is missing or empty".to_string())
    } else {
        sink.record(RawRecord {
            location,
            fields,
            values,
        })?
    };
    match verdict {
        None => Ok(()),
        Some(reason) => sink.skip(Skip {
            file: path.to_path_buf(),
            location,
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Default)]
    pub(crate) struct Collect {
        pub records: Vec<(Location, String, Vec<String>)>,
        pub skips: Vec<Skip>,
    }

    impl Sink for Collect {
        fn record(&mut self, r: RawRecord<'_>) -> Result<Option<String>, FeedError> {
            // Fields shown as `k=v` joined by `|`, unescaped: the readers' output as is.
            let shown: Vec<String> = r
                .fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            self.records
                .push((r.location, shown.join("|"), r.values.to_vec()));
            Ok(None)
        }
        fn skip(&mut self, skip: Skip) -> Result<(), FeedError> {
            self.skips.push(skip);
            Ok(())
        }
    }

    pub(crate) fn read_str(name: &str, body: &str, key: &str, records: Option<&str>) -> Collect {
        let dir = std::env::temp_dir().join(format!("tracer-feed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(body.as_bytes()).expect("write");
        let mut c = Collect::default();
        let opts = ReadOptions {
            format: None,
            key: key.to_string(),
            records: records.map(str::to_string),
        };
        read(&path, &opts, &mut c).expect("read feed");
        c
    }

    #[test]
    fn json_array_flattens_nested_context() {
        let c = read_str(
            "phish.json",
            r#"[{"mask":"*.evil.com/*","whois":{"country":"US","org":"X|Y"},"tags":["a","b"],
                 "files":[{"MD5":"aa"},{"MD5":"bb"}],"n":3,"ok":true,"none":null}]"#,
            "mask",
            None,
        );
        assert_eq!(c.records.len(), 1);
        let (loc, ctx, vals) = &c.records[0];
        assert_eq!(*loc, Location::Record { index: 1, line: 2 });
        assert_eq!(
            ctx,
            "mask=*.evil.com/*|whois.country=US|whois.org=X|Y|tags=a,b|files[0].MD5=aa|files[1].MD5=bb|n=3|ok=true|none="
        );
        assert_eq!(vals, &vec!["*.evil.com/*".to_string()]);
    }

    #[test]
    fn json_key_path_through_arrays_gives_one_value_per_element() {
        let c = read_str(
            "files.json",
            r#"[{"files":[{"MD5":"aa"},{"MD5":"bb"}]}, {"x":1}]"#,
            "files.MD5",
            None,
        );
        assert_eq!(c.records[0].2, vec!["aa", "bb"]);
        assert_eq!(c.skips.len(), 1);
        assert_eq!(c.skips[0].location, Location::Record { index: 2, line: 1 });
    }

    #[test]
    fn json_single_object_and_records_path() {
        let c = read_str("one.json", r#"{"ip":"1.2.3.4","x":"y"}"#, "ip", None);
        assert_eq!(c.records.len(), 1);
        let c = read_str(
            "misp.json",
            r#"{"meta":{"a":[1,2]},"response":{"Attribute":[{"value":"a.com"},{"value":"b.com"}]}}"#,
            "value",
            Some("response.Attribute"),
        );
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.records[1].2, vec!["b.com"]);
    }

    #[test]
    fn ndjson_skips_bad_lines_with_their_number() {
        let c = read_str(
            "x.jsonl",
            "{\"u\":\"a.com\"}\n\n{broken\n{\"u\":\"b.com\"}\n",
            "u",
            None,
        );
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.skips.len(), 1);
        assert_eq!(c.skips[0].location, Location::Line(3));
        assert!(c.skips[0].reason.contains("malformed JSON"));
    }

    #[test]
    fn csv_detects_delimiter_and_quotes() {
        let c = read_str(
            "semi.csv",
            "ioc;context\n\"gmer.com\";\"bad;URL\"\nshort\n",
            "ioc",
            None,
        );
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.records[0].1, "ioc=gmer.com|context=bad;URL");
        assert_eq!(c.skips.len(), 1);
        assert_eq!(c.skips[0].location, Location::Line(3));
        let c = read_str("tab.csv", "a\tb\n1\t2\n", "b", None);
        assert_eq!(c.records[0].1, "a=1|b=2");
    }

    #[test]
    fn text_lines_with_comments() {
        let c = read_str(
            "list.txt",
            "# header\n\nevil.com\n  bad.org  \n",
            "domain",
            None,
        );
        let values: Vec<_> = c.records.iter().map(|r| r.2[0].clone()).collect();
        assert_eq!(values, vec!["evil.com", "bad.org"]);
        assert_eq!(c.records[0].0, Location::Line(3));
        assert_eq!(c.records[1].1, "domain=bad.org");
    }

    #[test]
    fn malformed_json_document_is_an_error_with_position() {
        let dir = std::env::temp_dir().join(format!("tracer-feed-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.json");
        std::fs::write(&path, "[{\"a\":1},\n{\"a\":").expect("write");
        let opts = ReadOptions {
            format: None,
            key: "a".into(),
            records: None,
        };
        let err = read(&path, &opts, &mut Collect::default()).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("bad.json") && msg.contains("line 2"), "{msg}");
    }
}
