//! An `exec` enricher helper that misbehaves on request, for the tests of the helper
//! machinery (`tests/e2e/enrich.rs`). Speaks the JSON-lines protocol; each answer is
//! one hit `{"category":"faulty","context":{"seen":VALUE,"pid":PID}}`, except:
//!
//! - value `crash`: exits at once (status 3), answering nothing;
//! - value `garbage`: writes a line that is not an answer;
//! - a value starting with `quiet` (`quiet`, `quiet-7`): answers nothing for that
//!   request (the caller's timeout), and says `quiet: not answering VALUE` on its
//!   standard error;
//! - value `hang`: says `hang: reading no more` on its standard error, then stops
//!   reading and answering altogether, alive (a wedged helper);
//! - value `bye`: exits at once (status 0), leaving the answer to a child process of
//!   its own that inherits its output and writes the answer 100 ms later (answers
//!   that reach tracer after it saw the helper exit);
//! - value `endless`: writes 64 MiB without a newline on its output, then as `hang`;
//! - value `shout`: writes a 2 MiB line on its standard error, then a line
//!   `still talking`, then answers as usual;
//! - with `--reverse`: answers requests in pairs, the second one first;
//! - with `--slow MS`: one request at a time, single-threaded as many scripts are:
//!   reads a request, waits MS ms, answers, only then reads the next; every answer
//!   carries `"answered":N` (answers written so far, this one included) and a
//!   128 KiB `pad` outside the hit, so writing it waits on tracer reading.
//!
//! A helper that stops reading (`hang`, `endless`) exits once tracer is gone, so
//! a test that fails leaves no process behind. (`--echo-after MS`, the child `bye`
//! starts: copies its input to its output after MS ms.)
//!
//! Standard library only; `cargo test` builds it with the other examples.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reverse = args.iter().any(|a| a == "--reverse");
    let millis = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    };
    if let Some(delay) = millis("--slow") {
        return slow(delay);
    }
    if let Some(delay) = millis("--echo-after") {
        return echo_after(delay);
    }
    let (tx, rx) = mpsc::channel::<(u64, String)>();
    let writer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let pid = std::process::id();
        let answer = |id: u64, value: &str| {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{}", answer_line(id, value, pid));
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
            quiet if quiet.starts_with("quiet") => {
                eprintln!("quiet: not answering {quiet}");
            }
            "hang" => {
                eprintln!("hang: reading no more");
                wait_for_tracer_to_go()
            }
            "bye" => answer_after_exit(id, &value),
            "endless" => {
                let chunk = vec![b'x'; 64 * 1024];
                let mut out = std::io::stdout().lock();
                for _ in 0..1024 {
                    if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                        std::process::exit(0);
                    }
                }
                wait_for_tracer_to_go();
            }
            "shout" => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&vec![b'y'; 2 * 1024 * 1024]);
                let _ = writeln!(err);
                let _ = writeln!(err, "still talking");
                let _ = err.flush();
                if tx.send((id, value)).is_err() {
                    break;
                }
            }
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

/// One answer of the default modes.
fn answer_line(id: u64, value: &str, pid: u32) -> String {
    format!(
        r#"{{"id":{id},"hits":[{{"category":"faulty","context":{{"seen":{},"pid":{pid}}}}}]}}"#,
        json_string(value)
    )
}

/// `bye`: hand the answer to a child that inherits the output, and exit.
fn answer_after_exit(id: u64, value: &str) -> ! {
    let line = answer_line(id, value, std::process::id());
    let child = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["--echo-after", "100"])
            .stdin(std::process::Stdio::piped())
            .spawn()
    });
    match child {
        Ok(mut child) => {
            if let Some(mut input) = child.stdin.take() {
                let _ = writeln!(input, "{line}");
            }
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("bye: cannot start the child: {e}");
            std::process::exit(4)
        }
    }
}

/// `--echo-after MS`: read the input to its end, wait, write it out.
fn echo_after(delay: Duration) {
    let mut text = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::stdin(), &mut text).is_err() {
        return;
    }
    std::thread::sleep(delay);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&text).and_then(|()| out.flush());
}

/// `--slow`: read a request, wait, answer, then read the next.
fn slow(delay: Duration) {
    let pid = std::process::id();
    let pad = "p".repeat(128 * 1024);
    let mut answered = 0u64;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (Some(id), Some(value)) = (field(&line, "\"id\":"), field(&line, "\"value\":")) else {
            continue;
        };
        std::thread::sleep(delay);
        answered += 1;
        let value = json_string(value.trim().trim_matches('"'));
        let mut out = std::io::stdout().lock();
        let written = writeln!(
            out,
            r#"{{"id":{},"hits":[{{"category":"faulty","context":{{"seen":{value},"answered":{answered},"pid":{pid}}}}}],"pad":"{pad}"}}"#,
            id.trim()
        )
        .and_then(|()| out.flush());
        if written.is_err() {
            break;
        }
    }
}

/// Neither read nor answer any more; exit once tracer (the parent) is gone.
fn wait_for_tracer_to_go() -> ! {
    let parent = std::os::unix::process::parent_id();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
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
