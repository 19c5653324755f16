//! `/status` as HTML for people: rendered on the server from the status document (no
//! scripts, no build step), one column that reads on a phone, reloading itself. It shows the
//! overall state, each component with its state and 90-day uptime bars, and the probe's
//! round trips over the last hour as an inline SVG chart. Only states, dates and timings
//! appear: no hosts, errors or configuration.

use std::fmt::Write;

use super::State;
use super::doc::{ComponentDoc, ProbeDoc, StatusDoc};

const CSS: &str = r#"
:root{--ok:#1f9d55;--warn:#d69e00;--down:#d64545;--none:#c9ced6;--fg:#1c2330;--muted:#5c6675;--bg:#f6f7f9;--card:#fff;--line:#e3e6eb}
@media (prefers-color-scheme:dark){:root{--fg:#e7eaf0;--muted:#9aa3b2;--bg:#12151b;--card:#1b2029;--line:#2c323d;--none:#3a414d}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:860px;margin:0 auto;padding:20px 14px 40px}h1{font-size:1.5rem;margin:8px 0 16px}h2{font-size:1rem;margin:0}
.banner{border-radius:10px;padding:16px 18px;color:#fff;font-weight:600;font-size:1.1rem;margin-bottom:20px}
.banner.s-operational{background:var(--ok)}.banner.s-degraded{background:var(--warn)}.banner.s-down{background:var(--down)}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:4px 16px;margin-bottom:20px}
.component{padding:14px 0;border-bottom:1px solid var(--line)}.component:last-child{border-bottom:0}
.row{display:flex;justify-content:space-between;align-items:center;gap:10px}
.pill{font-size:.85rem;font-weight:600;white-space:nowrap}.pill.s-operational{color:var(--ok)}.pill.s-degraded{color:var(--warn)}.pill.s-down{color:var(--down)}
.bars{display:flex;gap:2px;height:30px;margin-top:10px}.bar{flex:1 1 0;min-width:1px;border-radius:2px;background:var(--none)}
.bar.d-operational{background:var(--ok)}.bar.d-degraded{background:var(--warn)}.bar.d-down{background:var(--down)}
.legend{display:flex;justify-content:space-between;color:var(--muted);font-size:.78rem;margin-top:4px}
.card.probe{padding:14px 16px}.probe svg{width:100%;height:120px;display:block;margin-top:10px}
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.78rem;margin-top:2px}.note{color:var(--muted);font-size:.85rem;margin-top:2px}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(120px,1fr));gap:8px;margin:12px 0 4px}
.stats div{border:1px solid var(--line);border-radius:8px;padding:8px 10px}.stats dt{color:var(--muted);font-size:.78rem}.stats dd{margin:0;font-weight:600}
footer{color:var(--muted);font-size:.82rem}footer a{color:inherit}
"#;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn state_label(s: State) -> &'static str {
    match s {
        State::Operational => "Operational",
        State::Degraded => "Degraded",
        State::Down => "Down",
    }
}

fn banner(s: State) -> &'static str {
    match s {
        State::Operational => "All systems operational",
        State::Degraded => "Some systems are degraded",
        State::Down => "Some systems are down",
    }
}

/// What a reason code means to a reader of the page.
fn explain(reason: &str) -> &'static str {
    match reason {
        "slow" => "Responding slowly",
        "unreachable" | "timeout" => "Not responding",
        "unavailable" | "lag_unknown" => "State cannot be determined right now",
        "outbox_backlog" | "probe_slow" => "Events are delayed",
        "outbox_stalled" => "Event delivery has stopped",
        "probe_failed" => "Events are not reaching their destinations",
        "probe_stale" => "End-to-end monitoring has paused",
        "consumer_lag" => "Processing is behind",
        "timers_overdue" => "Scheduled steps are running late",
        "timers_stalled" => "Scheduled steps have stopped",
        "accept_failed" => "New events are not being accepted",
        "error_rate" => "Elevated error rate",
        "parked_rows" => "Some events are held for an operator",
        "registry_unavailable" => "Processing waits for the schema registry",
        "retention_held" => "Old events are kept for a consumer that is behind",
        _ => "Investigating",
    }
}

fn component(out: &mut String, c: &ComponentDoc) {
    let st = c.state.as_str();
    let _ = write!(
        out,
        r#"<article class="component" data-component="{name}" data-state="{st}"><div class="row"><h2>{title}</h2><span class="pill s-{st}">{label}</span></div>"#,
        name = c.name,
        title = esc(c.title),
        label = state_label(c.state),
    );
    if let Some(r) = c.reason {
        let _ = write!(out, r#"<div class="note">{}</div>"#, explain(r));
    }
    let uptime = c
        .uptime_percent
        .map(|u| format!("{u:.2}% uptime"))
        .unwrap_or_else(|| "no data yet".into());
    let _ = write!(
        out,
        r#"<div class="bars" role="img" aria-label="{n} days: {uptime}">"#,
        n = c.days.len()
    );
    for d in &c.days {
        let tip = match d.uptime_percent {
            Some(u) => format!("{} · {u:.2}% uptime", d.date),
            None => format!("{} · no data", d.date),
        };
        let _ = write!(
            out,
            r#"<span class="bar d-{}" title="{}"></span>"#,
            d.state,
            esc(&tip)
        );
    }
    let _ = write!(
        out,
        r#"</div><div class="legend"><span>{n} days ago</span><span>{uptime}</span><span>Today</span></div></article>"#,
        n = c.days.len()
    );
}

/// Firing alerts of public rules, above the components (nothing when there are none).
fn alerts(out: &mut String, alerts: &[super::doc::AlertDoc]) {
    if alerts.is_empty() {
        return;
    }
    let _ = write!(out, r#"<div class="alerts" id="alerts">"#);
    for a in alerts {
        let _ = write!(
            out,
            r#"<div class="note" data-alert="{rule}"><strong>{rule}</strong> ({sev}) since {since}{summary}</div>"#,
            rule = esc(&a.rule),
            sev = esc(&a.severity),
            since = esc(&a.since),
            summary = a
                .summary
                .as_deref()
                .map(|s| format!(": {}", esc(s)))
                .unwrap_or_default(),
        );
    }
    let _ = write!(out, "</div>");
}

/// The last hour of round trips as an SVG line, failures as red ticks.
fn chart(out: &mut String, p: &ProbeDoc, now_ms: i64) {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    const TOP: f64 = 4.0;
    let max = p
        .points
        .iter()
        .filter_map(|x| x.round_trip_ms)
        .fold(0.0_f64, f64::max);
    let ymax = nice_ceiling(max.max(1.0) * 1.15);
    let x = |at_ms: i64| ((at_ms - (now_ms - 3_600_000)) as f64 / 3_600_000.0 * W).clamp(0.0, W);
    let y = |ms: f64| TOP + (H - TOP) * (1.0 - (ms / ymax).min(1.0));
    let _ = write!(
        out,
        r#"<div class="axis"><span>{ymax} ms</span></div><svg viewBox="0 0 {W} {H}" role="img" aria-label="Probe round trip over the last hour" preserveAspectRatio="none"><rect x="0" y="0" width="{W}" height="{H}" fill="none" stroke="var(--line)" vector-effect="non-scaling-stroke"/>"#
    );
    let line: Vec<String> = p
        .points
        .iter()
        .filter(|pt| pt.ok)
        .filter_map(|pt| {
            pt.round_trip_ms
                .map(|ms| format!("{:.1},{:.1}", x(pt.at_ms), y(ms)))
        })
        .collect();
    if !line.is_empty() {
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="var(--ok)" stroke-width="2" vector-effect="non-scaling-stroke" points="{}"/>"#,
            line.join(" ")
        );
    }
    for pt in p.points.iter().filter(|pt| !pt.ok) {
        let _ = write!(
            out,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{H}" stroke="var(--down)" stroke-width="2" vector-effect="non-scaling-stroke"><title>failed</title></line>"#,
            x(pt.at_ms)
        );
    }
    let _ = write!(
        out,
        r#"</svg><div class="axis"><span>60 min ago</span><span>{}</span><span>now</span></div>"#,
        if p.points.is_empty() {
            "no probe runs in the last hour"
        } else {
            ""
        }
    );
}

/// 1, 2, 5 × 10ⁿ at or above `x`.
fn nice_ceiling(x: f64) -> f64 {
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "–".into())
}

/// The whole page.
pub fn render(doc: &StatusDoc, now_ms: i64) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let title = esc(&doc.title);
    let st = doc.status.as_str();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="{refresh}"><title>{title}</title><style>{CSS}</style></head><body><main><h1>{title}</h1><div class="banner s-{st}" id="overall" data-state="{st}">{banner}</div><section class="card" id="components">"#,
        refresh = doc.refresh_secs,
        banner = banner(doc.status),
    );
    alerts(&mut out, &doc.alerts);
    for c in &doc.components {
        component(&mut out, c);
    }
    let p = &doc.probe;
    let _ = write!(
        out,
        r#"</section><section class="card probe" id="probe"><h2>End-to-end event round trip, last hour</h2>"#
    );
    chart(&mut out, p, now_ms);
    let _ = write!(
        out,
        r#"<dl class="stats"><div><dt>Latest</dt><dd>{last}</dd></div><div><dt>Median</dt><dd>{p50}</dd></div><div><dt>95th percentile</dt><dd>{p95}</dd></div><div><dt>Failed runs</dt><dd>{f} of {n}</dd></div></dl></section>"#,
        last = match &p.last {
            Some(l) if l.ok => ms(l.round_trip_ms),
            Some(_) => "failed".into(),
            None => "–".into(),
        },
        p50 = ms(p.last_hour.p50_ms),
        p95 = ms(p.last_hour.p95_ms),
        f = p.last_hour.failures,
        n = p.last_hour.runs,
    );
    let _ = write!(
        out,
        r#"<footer>Updated {updated} · reloads every {refresh} s · a synthetic event is sent through the whole pipeline every {every} s · <a href="/status.json">JSON</a></footer></main></body></html>"#,
        updated = esc(&doc.updated_at),
        refresh = doc.refresh_secs,
        every = p.interval_secs,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_ceilings() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }
}
