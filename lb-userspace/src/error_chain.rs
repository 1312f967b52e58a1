//! An error and its causes on one line, each cause once.
//!
//! Many errors here (ours and our dependencies') already put their cause in their own message
//! *and* return it from `source()`, so printing the chain naively (`{:#}`) repeats the OS
//! error: "binding the admin socket /x: Permission denied (os error 13): Permission denied (os
//! error 13)". A cause whose text the line already holds adds nothing and is left out.

use std::error::Error;

/// `error: cause: cause...`, skipping any cause the text so far already contains.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("binding the admin socket /x: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(13);
        let os = io.to_string();
        let e = anyhow::Error::new(Repeats { source: io }).context("starting");
        // What `{:#}` prints today: the OS error twice.
        assert_eq!(format!("{e:#}").matches(&os).count(), 2);
        let line = one_line(e.as_ref());
        assert_eq!(line, format!("starting: binding the admin socket /x: {os}"));
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(98))
            .context("binding the management port 127.0.0.1:9000");
        assert_eq!(
            one_line(e.as_ref()),
            format!(
                "binding the management port 127.0.0.1:9000: {}",
                std::io::Error::from_raw_os_error(98)
            )
        );
    }
}
