//! Prometheus rule files (`groups: [{name, interval?, rules: [...]}]`), read for
//! `alerts.rules.file` and for the built-in rules. Each rule is an alerting rule in the API's
//! shape (`alert`, `expr`, `for`, `keep_firing_for`, `labels`, `annotations`, plus
//! `severity`, `targets`, `public`). Recording rules (`record:`) are refused: substrate does
//! not write series back, and silently skipping them would hide a rule the operator expects
//! to run. Every problem names the group, the rule and the field.

use serde::Deserialize;

use super::RulesConfig;
use super::model::Rule;
use super::validate::{self, Invalid};
use crate::app::AppContext;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the alert rules file {path}: {cause}")]
    Read { path: String, cause: String },
    #[error("the alert rules file is not a Prometheus rule file: {0}")]
    Syntax(String),
    #[error("alert rules file, group {group:?}, rule {rule:?}: {problem}")]
    Rule {
        group: String,
        rule: String,
        problem: String,
    },
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
    /// Accepted for compatibility; every rule is evaluated every `alerts.rules.interval_secs`.
    #[serde(default)]
    #[allow(dead_code)]
    interval: Option<String>,
    #[serde(default)]
    rules: Vec<serde_yaml::Value>,
}

/// One rule of a file with where it stands (for messages).
pub struct Located {
    pub group: String,
    pub rule: Rule,
}

impl Located {
    pub fn error(&self, problem: impl std::fmt::Display) -> FileError {
        FileError::Rule {
            group: self.group.clone(),
            rule: self.rule.alert.clone(),
            problem: problem.to_string(),
        }
    }
}

fn rule_of(group: &str, i: usize, v: serde_yaml::Value) -> Result<Rule, FileError> {
    let name = |key: &str| {
        v.get(key)
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", i + 1))
    };
    if v.get("record").is_some() {
        return Err(FileError::Rule {
            group: group.to_string(),
            rule: name("record"),
            problem: "recording rules (record:) are not supported; only alerting rules (alert:)"
                .into(),
        });
    }
    let rule_name = name("alert");
    serde_yaml::from_value(v).map_err(|e| FileError::Rule {
        group: group.to_string(),
        rule: rule_name,
        problem: e.to_string(),
    })
}

/// Parses a rule file and checks each rule's shape (not yet its expression); names are
/// unique across the file.
pub fn parse(text: &str, cfg: &RulesConfig) -> Result<Vec<Located>, FileError> {
    let file: RuleFile =
        serde_yaml::from_str(text).map_err(|e| FileError::Syntax(e.to_string()))?;
    let mut out: Vec<Located> = Vec::new();
    for g in file.groups {
        for (i, v) in g.rules.into_iter().enumerate() {
            let rule = rule_of(&g.name, i, v)?;
            let loc = Located {
                group: g.name.clone(),
                rule,
            };
            validate::check_shape(&loc.rule, cfg).map_err(|e| loc.error(e))?;
            if out.iter().any(|o| o.rule.alert == loc.rule.alert) {
                return Err(loc.error("the name is used twice in the file"));
            }
            out.push(loc);
        }
    }
    Ok(out)
}

/// Reads, parses and fully validates the rules file at `path`.
pub async fn load(
    ctx: &AppContext,
    path: &std::path::Path,
    cfg: &RulesConfig,
) -> Result<Vec<Rule>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::Read {
        path: path.display().to_string(),
        cause: e.to_string(),
    })?;
    let mut out = Vec::new();
    for loc in parse(&text, cfg)? {
        validate::check_expr(ctx, &loc.rule.expr)
            .await
            .map_err(|e: Invalid| loc.error(e))?;
        out.push(loc.rule);
    }
    Ok(out)
}
