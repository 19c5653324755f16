//! `substrate status`: the component table of the status page, read from a running server's
//! `/status.json` — the same document `/status` renders, so both always agree. Colour on a
//! terminal (unless `NO_COLOR` is set), plain text when piped, the document itself with
//! `--json`. An unreachable server is named with the cause and the setting to fix.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;

/// The address a local server listens on, for commands that talk to it: `http.listen`, with an
/// unspecified address (`0.0.0.0`) taken as loopback.
pub fn local_base(cfg: &Config) -> String {
    let mut addr = cfg.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// The innermost cause of an error, e.g. `connection refused` rather than reqwest's
/// `error sending request for url (…)`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// `GET {base}/status.json`, or an error naming the server, the cause and the fix.
pub async fn fetch(base: &str) -> anyhow::Result<Value> {
    let url = format!("{}/status.json", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = client.get(&url).send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach substrate at {base}: {} (is it running? give --url, or set http.listen / SUBSTRATE_HTTP__LISTEN)",
            root_cause(&e)
        )
    })?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{url} answered {} (is this a substrate server?)",
        resp.status()
    );
    resp.json()
        .await
        .with_context(|| format!("{url} did not answer a status document"))
}

/// ANSI colour of a state.
fn colour(state: &str) -> &'static str {
    match state {
        "operational" => "\x1b[32m",
        "degraded" => "\x1b[33m",
        _ => "\x1b[31m",
    }
}

/// The component table as text; `colour_on` adds ANSI colours to the states.
pub fn table(doc: &Value, colour_on: bool) -> String {
    // Padding goes outside the colour codes, so columns line up either way.
    let paint = |state: &str, width: usize| {
        let pad = " ".repeat(width.saturating_sub(state.len()));
        if colour_on {
            format!("{}{state}\x1b[0m{pad}", colour(state))
        } else {
            format!("{state}{pad}")
        }
    };
    let overall = doc["status"].as_str().unwrap_or("unknown");
    let mut out = format!(
        "{}: {}  (updated {})\n\n{:<14} {:<24} {:<12} {:>8}  {}\n",
        doc["title"].as_str().unwrap_or("substrate"),
        paint(overall, 0),
        doc["updated_at"].as_str().unwrap_or("?"),
        "COMPONENT",
        "TITLE",
        "STATE",
        "UPTIME",
        "REASON"
    );
    for c in doc["components"].as_array().into_iter().flatten() {
        let uptime = c["uptime_percent"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |u| format!("{u:.2}%"));
        out.push_str(&format!(
            "{:<14} {:<24} {} {:>8}  {}\n",
            c["name"].as_str().unwrap_or("?"),
            c["title"].as_str().unwrap_or(""),
            paint(c["state"].as_str().unwrap_or("?"), 12),
            uptime,
            c["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

/// Runs `substrate status`.
pub async fn run(cfg: &Config, url: Option<String>, json: bool) -> anyhow::Result<()> {
    let base = url.unwrap_or_else(|| local_base(cfg));
    let doc = fetch(&base).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let colour_on = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", table(&doc, colour_on));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lists_each_component() {
        let doc = json!({
            "title": "substrate", "status": "degraded", "updated_at": "2026-12-07T12:00:00Z",
            "components": [
                {"name": "gateway", "title": "Event ingest API", "state": "operational", "uptime_percent": 99.5},
                {"name": "log", "title": "Event log", "state": "degraded", "reason": "lagging", "uptime_percent": null},
            ]
        });
        let plain = table(&doc, false);
        assert!(plain.contains("substrate: degraded"), "{plain}");
        assert!(
            plain.contains("gateway        Event ingest API         operational    99.50%"),
            "{plain}"
        );
        assert!(plain.contains("lagging"), "{plain}");
        assert!(!plain.contains('\x1b'));
        assert!(table(&doc, true).contains("\x1b[33mdegraded"));
    }
}
