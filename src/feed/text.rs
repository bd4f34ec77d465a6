//! Plain-text feeds: one indicator per line, `#` starts a comment line. The line is
//! the whole record; its one field is `<key>=<line>`, with `<key>` the `-k` name (or
//! `indicator`), so the answer still shows what matched.

use std::io::BufRead;
use std::path::Path;

use super::{deliver, FeedError, Fields, Location, Sink};

pub(super) fn read<R: BufRead>(
    path: &Path,
    mut reader: R,
    key: &str,
    sink: &mut dyn Sink,
) -> Result<(), FeedError> {
    let name = if key.is_empty() { "indicator" } else { key };
    let mut buf = Vec::new();
    let mut fields = Fields::default();
    let mut values = vec![String::new()];
    let mut line_no = 0u64;
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
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        fields.clear();
        fields.push(name.as_bytes(), line);
        values[0] = String::from_utf8_lossy(line).into_owned();
        deliver(path, sink, Location::Line(line_no), &fields, &values)?;
    }
}
