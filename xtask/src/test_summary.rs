//! Running `cargo test` with its output streamed live while counting libtest's result lines.

use std::{
    fmt,
    io::{BufRead as _, BufReader, Write},
    ops::AddAssign,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::process;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Tests that ran (passed or failed).
    pub fn ran(self) -> u64 {
        self.passed + self.failed
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, rhs: Self) {
        self.passed += rhs.passed;
        self.failed += rhs.failed;
        self.ignored += rhs.ignored;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Parses libtest's per-binary summary, e.g.
/// `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`
/// or the same starting `test result: FAILED.`. ANSI colour codes are ignored.
pub fn parse_result_line(line: &str) -> Option<Counts> {
    let line = strip_ansi(line);
    let rest = line.trim().strip_prefix("test result:")?.trim_start();
    let rest = rest
        .strip_prefix("ok.")
        .or_else(|| rest.strip_prefix("FAILED."))?;
    let mut counts = Counts::default();
    let (mut saw_passed, mut saw_failed) = (false, false);
    for part in rest.split(';') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match what {
            "passed" => (counts.passed, saw_passed) = (number, true),
            "failed" => (counts.failed, saw_failed) = (number, true),
            "ignored" => counts.ignored = number,
            _ => {}
        }
    }
    (saw_passed && saw_failed).then_some(counts)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..=~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `cmd` (a `cargo test`), echoing its stdout line by line as it arrives (stderr goes
/// straight through) and summing every libtest result line. A run that exits unsuccessfully
/// without reporting any failed test (compile error, crashed or killed test binary) counts as
/// one failure.
pub fn run_counting(cmd: &mut Command) -> Result<Counts> {
    run_counting_to(cmd, &mut std::io::stdout())
}

/// [`run_counting`] with the echo going to `echo` (tests pass a buffer: libtest does not
/// capture writes to `io::stdout()`, and echoed result lines would be counted twice by an
/// enclosing `cargo xtask test`).
fn run_counting_to(cmd: &mut Command, echo: &mut impl Write) -> Result<Counts> {
    process::announce(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", process::display(cmd)))?;
    let mut reader = BufReader::new(child.stdout.take().context("child stdout not piped")?);
    let mut counts = Counts::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .context("reading cargo test output")?;
        if read == 0 {
            break;
        }
        // Echo errors (e.g. a closed terminal) must not stop the count.
        let _ = echo.write_all(&line).and_then(|()| echo.flush());
        if let Some(found) = parse_result_line(&String::from_utf8_lossy(&line)) {
            counts += found;
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}`", process::display(cmd)))?;
    if !status.success() && counts.failed == 0 {
        eprintln!(
            "error: `{}` failed ({status}) without reporting a failing test \
             (compile error or crashed test binary?); counting it as 1 failure",
            process::display(cmd)
        );
        counts.failed += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::{parse_result_line, run_counting_to, Counts};

    fn sh(script: &str) -> Counts {
        let mut echoed = Vec::new();
        let counts = run_counting_to(Command::new("sh").args(["-c", script]), &mut echoed).unwrap();
        assert!(echoed.ends_with(b"\n") || echoed.is_empty());
        counts
    }

    #[test]
    fn counts_streamed_output() {
        let ok = "test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out";
        let failed =
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        let counts = sh(&format!(
            "echo 'running 3 tests'; echo '{ok}'; echo '{failed}'; exit 101"
        ));
        assert_eq!(
            counts,
            Counts {
                passed: 3,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn failure_without_result_line_counts_once() {
        let counts = sh("exit 101");
        assert_eq!(counts.failed, 1);
        let ok = "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out";
        let counts = sh(&format!("echo '{ok}'; exit 101"));
        assert_eq!((counts.passed, counts.failed), (4, 1));
        assert_eq!(sh(&format!("echo '{ok}'")).failed, 0);
    }

    #[test]
    fn parses_ok_line() {
        let line = "test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 3 filtered out; \
                    finished in 0.42s\n";
        assert_eq!(
            parse_result_line(line),
            Some(Counts {
                passed: 12,
                failed: 0,
                ignored: 2
            })
        );
    }

    #[test]
    fn parses_failed_line() {
        let line = "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; \
                    0 filtered out; finished in 1.00s";
        assert_eq!(
            parse_result_line(line),
            Some(Counts {
                passed: 3,
                failed: 1,
                ignored: 0
            })
        );
    }

    #[test]
    fn parses_coloured_line() {
        let line = "test result: \u{1b}[32mok\u{1b}[0m. 1 passed; 0 failed; 0 ignored; \
                    0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(parse_result_line(line).map(|c| c.passed), Some(1));
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "",
            "running 3 tests",
            "test maglev::tests::spread ... ok",
            "test result: maybe. 1 passed; 0 failed",
            "test result: ok. nothing here",
            "   Doc-tests lb_common",
        ] {
            assert_eq!(parse_result_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn sums() {
        let mut total = Counts::default();
        total += Counts {
            passed: 2,
            failed: 1,
            ignored: 3,
        };
        total += Counts {
            passed: 5,
            failed: 0,
            ignored: 0,
        };
        assert_eq!(total.to_string(), "7 passed, 1 failed, 3 ignored");
        assert_eq!(total.ran(), 8);
    }
}
