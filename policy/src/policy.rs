//! A loaded policy and the decisions it makes.

use std::path::Path;

use crate::error::PolicyError;
use crate::hijack::HijackSpec;
use crate::model::{Action, Operation, Query};
use crate::rule::Rule;

/// What happens when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRule {
    /// The action.
    pub action: Action,
    /// Whether its decisions are logged.
    pub log: bool,
    /// Line of `default` in the file, from 1; 0 for [`Policy::allow_all`].
    pub line: usize,
    /// Column of the same, from 1; 0 for [`Policy::allow_all`].
    pub column: usize,
}

/// An ordered list of rules and a default: the first rule that matches a query decides it,
/// and the default decides when none does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    origin: String,
    hijack: Option<HijackSpec>,
    default: DefaultRule,
    rules: Vec<Rule>,
}

/// The answer to a [`Query`], and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// What to do.
    pub action: Action,
    /// Whether to log it.
    pub log: bool,
    /// The rule that matched; `None` when the default decided.
    pub rule: Option<&'p Rule>,
}

impl Decision<'_> {
    /// What decided, for logs: `rule 3 (policy.toml:14:1, "DNS")` or `default`.
    pub fn describe(&self) -> String {
        match self.rule {
            None => "default".to_owned(),
            Some(rule) => describe_rule(rule),
        }
    }
}

pub(crate) fn describe_rule(rule: &Rule) -> String {
    match &rule.comment {
        Some(comment) => format!("rule {} ({}, {comment:?})", rule.index, rule.location()),
        None => format!("rule {} ({})", rule.index, rule.location()),
    }
}

impl Policy {
    pub(crate) fn new(
        origin: String,
        hijack: Option<HijackSpec>,
        default: DefaultRule,
        rules: Vec<Rule>,
    ) -> Policy {
        Policy {
            origin,
            hijack,
            default,
            rules,
        }
    }

    /// Reads and parses the policy file at `path`; its errors name the path as given.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|err| PolicyError::unreadable(&origin, &err))?;
        Policy::parse(&text, &origin)
    }

    /// Parses a policy from its text; `origin` names it in errors and decisions.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        crate::validate::parse(text, origin)
    }

    /// The policy in force when none is given: no rules, allow everything, log nothing.
    pub fn allow_all() -> Policy {
        Policy {
            origin: "(no policy)".to_owned(),
            hijack: None,
            default: DefaultRule {
                action: Action::Allow,
                log: false,
                line: 0,
                column: 0,
            },
            rules: Vec::new(),
        }
    }

    /// Decides `query`: the first rule matching its normalised form, or the default.
    pub fn decide(&self, query: &Query) -> Decision<'_> {
        let query = query.normalized();
        match self.rules.iter().find(|r| r.mismatch(&query).is_none()) {
            Some(rule) => Decision {
                action: rule.action,
                log: rule.log,
                rule: Some(rule),
            },
            None => Decision {
                action: self.default.action,
                log: self.default.log,
                rule: None,
            },
        }
    }

    /// Whether the supervisor must trap `op`: true when a rule names it, or when the default
    /// denies or logs. When false, every `op` would be allowed silently, so checking it
    /// would only cost time.
    pub fn traps(&self, op: Operation) -> bool {
        self.rules.iter().any(|rule| rule.names(op))
            || self.default.action != Action::Allow
            || self.default.log
    }

    /// The file's `hijack` selection, if it has one; `RUMPHIJACK` overrides it.
    pub fn hijack(&self) -> Option<HijackSpec> {
        self.hijack
    }

    /// The file the policy came from, or the origin given to [`Policy::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What happens when no rule matches.
    pub fn default_rule(&self) -> &DefaultRule {
        &self.default
    }
}

#[cfg(test)]
mod tests;
