//! CSV feeds: a header row names the fields; the delimiter (`,` `;` or tab) is the
//! one that occurs most often, outside quotes, in the header line.

use std::io::BufRead;
use std::path::Path;

use super::{deliver, FeedError, Fields, Location, Sink, Skip};

pub(super) fn read<R: BufRead>(
    path: &Path,
    mut reader: R,
    key: &str,
    sink: &mut dyn Sink,
) -> Result<(), FeedError> {
    let io = |source| FeedError::Io {
        file: path.to_path_buf(),
        source,
    };
    // Peek at the header line without consuming it, to pick the delimiter.
    let delimiter = detect_delimiter(reader.fill_buf().map_err(io)?);
    let mut csv = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(reader.by_ref());
    let headers = csv
        .byte_headers()
        .map_err(|e| FeedError::Csv {
            file: path.to_path_buf(),
            message: format!("cannot read header: {e}"),
        })?
        .clone();
    let key_col = headers
        .iter()
        .position(|h| h.trim_ascii() == key.as_bytes())
        .ok_or_else(|| FeedError::MissingColumn {
            file: path.to_path_buf(),
            key: key.to_string(),
            columns: headers
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        })?;

    let mut row = ::csv::ByteRecord::new();
    let mut fields = Fields::default();
    let mut values = Vec::new();
    loop {
        let line = csv.position().line() + 1;
        match csv.read_byte_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                // A broken quote or bad UTF-8 spoils only this row.
                sink.skip(Skip {
                    file: path.to_path_buf(),
                    location: Location::Line(line),
                    reason: format!("malformed CSV row: {e}"),
                })?;
                continue;
            }
        }
        let location = Location::Line(row.position().map_or(line, |p| p.line()));
        if row.len() == 1 && row[0].trim_ascii().is_empty() {
            continue;
        }
        if row.len() != headers.len() {
            sink.skip(Skip {
                file: path.to_path_buf(),
                location,
                reason: format!("row has {} fields, header has {}", row.len(), headers.len()),
            })?;
            continue;
        }
        fields.clear();
        for (h, v) in headers.iter().zip(row.iter()) {
            fields.push(h.trim_ascii(), v);
        }
        values.clear();
        let v = String::from_utf8_lossy(row[key_col].trim_ascii());
        if !v.is_empty() {
            values.push(v.into_owned());
        }
        deliver(path, sink, location, &fields, &values)?;
    }
}

fn detect_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    candidates[best]
}

#[cfg(test)]
mod tests {
    #[test]
    fn delimiter_ignores_quoted_separators() {
        assert_eq!(super::detect_delimiter(b"\"a,b,c\";d\n1;2"), b';');
        assert_eq!(super::detect_delimiter(b"ioc,context"), b',');
        assert_eq!(super::detect_delimiter(b"single"), b',');
    }
}
