//! Where plugin log lines go: every world imports `log`, and each record is
//! handed to the plugin's sink tagged with the plugin's name.

use std::sync::Arc;

/// One structured log line from a plugin.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub plugin: String,
    pub level: &'static str,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Where plugin log lines go.
pub type LogSink = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Default sink: one line on stderr.
pub fn stderr_sink() -> LogSink {
    Arc::new(|r: &LogRecord| {
        let fields: String = r.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        eprintln!("[plugin {}] {}: {}{}", r.plugin, r.level, r.message, fields);
    })
}
