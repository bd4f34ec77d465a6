//! An `exec` enricher helper that misbehaves on request, for the tests of the helper
//! machinery (`tests/e2e/enrich.rs`). Speaks the JSON-lines protocol; each answer is
//! one hit `{"category":"faulty","context":{"seen":VALUE,"pid":PID}}`, except:
//!
//! - value `crash`: exits at once (status 3), answering nothing;
//! - value `garbage`: writes a line that is not an answer;
//! - value `quiet`: answers nothing for that request (the caller's timeout);
//! - with `--reverse`: answers requests in pairs, the second one first.
//!
//! Standard library only; `cargo test` builds it with the other examples.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

fn main() {
    let reverse = std::env::args().any(|a| a == "--reverse");
    let (tx, rx) = mpsc::channel::<(u64, String)>();
    let writer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let pid = std::process::id();
        let answer = |id: u64, value: &str| {
            let hit = format!(
                r#"{{"id":{id},"hits":[{{"category":"faulty","context":{{"seen":{},"pid":{pid}}}}}]}}"#,
                json_string(value)
            );
            let mut out = stdout.lock();
            let _ = writeln!(out, "{hit}");
            let _ = out.flush();
        };
        let mut held: Option<(u64, String)> = None;
        loop {
            let next = if reverse && held.is_some() {
                rx.recv_timeout(Duration::from_millis(100))
            } else {
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            };
            match next {
                Ok((id, value)) if reverse => match held.take() {
                    // The later request first, then the earlier one.
                    Some((first, first_value)) => {
                        answer(id, &value);
                        answer(first, &first_value);
                    }
                    None => held = Some((id, value)),
                },
                Ok((id, value)) => answer(id, &value),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((id, value)) = held.take() {
                        answer(id, &value);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (Some(id), Some(value)) = (field(&line, "\"id\":"), field(&line, "\"value\":")) else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match value.as_str() {
            "crash" => std::process::exit(3),
            "garbage" => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "this is not JSON");
                let _ = out.flush();
            }
            "quiet" => {}
            _ => {
                if tx.send((id, value)).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

/// The text after `key` up to the next `,` or `}` (tracer writes flat objects whose
/// string values the tests keep free of those characters).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
