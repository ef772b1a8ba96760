//! Structured logging into the host's run log (the `log` import of every world).
//!
//! Inside a component the message and fields go to the host, which tags them
//! with the plugin's name. Natively (the host calling a rule as plain Rust, or
//! unit tests) these functions do nothing.

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Sends one record to the host: a message plus key/value fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    imp::log(level, message, fields);
}

pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}

// Each world's bindings carry their own copy of the (identical) `log` import;
// use whichever world this build enables.
#[cfg(all(
    target_arch = "wasm32",
    any(feature = "reward", feature = "loader", feature = "schedule")
))]
mod imp {
    use super::Level;
    #[cfg(all(feature = "loader", not(feature = "reward")))]
    use crate::bindings::loader::lmmhost::plugin::log as host;
    #[cfg(feature = "reward")]
    use crate::bindings::reward::lmmhost::plugin::log as host;
    #[cfg(all(feature = "schedule", not(feature = "reward"), not(feature = "loader")))]
    use crate::bindings::schedule::lmmhost::plugin::log as host;

    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        host::log(level, message, &fields);
    }
}

#[cfg(not(all(
    target_arch = "wasm32",
    any(feature = "reward", feature = "loader", feature = "schedule")
)))]
mod imp {
    use super::Level;

    pub fn log(_level: Level, _message: &str, _fields: &[(&str, &str)]) {}
}
