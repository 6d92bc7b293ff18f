//! The second parsing stage: raw values checked and turned into a [`Policy`].
//!
//! Every check that fails names the value it concerns by its span, which becomes the
//! `line:column` of the [`PolicyError`].

use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use crate::cidr::{Cidr, NamedSet};
use crate::error::PolicyError;
use crate::hijack::HijackSpec;
use crate::model::{deny_errno_by_name, Action, Operation, DEFAULT_DENY_ERRNO, DENY_ERRNOS};
use crate::policy::{DefaultRule, Policy};
use crate::raw::{AddrWord, Item, OneOrMany, OpWord, PortItem, RawDefault, RawPolicy, RawRule};
use crate::rule::{AddrItem, FamilyMatch, PortRange, ProtocolMatch, Rule};

/// Parses and validates a policy file's text.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let checker = Checker { text, origin };
    let raw: RawPolicy = toml::from_str(text).map_err(|err| checker.toml_error(&err))?;

    let hijack = match &raw.hijack {
        Some(spec) => Some(
            HijackSpec::parse(spec.get_ref())
                .map_err(|err| checker.error(spec.span(), format!("invalid `hijack`: {err}")))?,
        ),
        None => None,
    };

    let Some(default) = raw.default else {
        return Err(PolicyError::at(
            origin,
            1,
            1,
            "the policy has no `default`; expected `default = \"allow\"`, \
             `default = \"deny\"` or a [default] table"
                .to_owned(),
        ));
    };
    let default = checker.default(default)?;

    let shared_origin: Arc<str> = origin.into();
    let rules = raw
        .rule
        .into_iter()
        .enumerate()
        .map(|(i, rule)| checker.rule(i + 1, rule, &shared_origin))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Policy::new(origin.to_owned(), hijack, default, rules))
}

struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: String) -> PolicyError {
        let (line, column) = position(self.text, span.start);
        PolicyError::at(self.origin, line, column, message)
    }

    fn toml_error(&self, err: &toml::de::Error) -> PolicyError {
        let start = err.span().map_or(0, |span| span.start);
        // Messages from the TOML parser may span lines; a diagnostic is one line.
        let lines: Vec<&str> = err.message().lines().map(str::trim).collect();
        let mut message = lines.join("; ");
        if message.is_empty() {
            // The parser gives no message when the text ends in the middle of a value.
            message = if start >= self.text.trim_end().len() {
                "the file ends where a value was expected".to_owned()
            } else {
                "invalid TOML syntax".to_owned()
            };
        }
        if message.contains("expected a sequence") {
            message.push_str(" (rules are written [[rule]], with double brackets)");
        }
        self.error(start..start, message)
    }

    fn default(&self, raw: Spanned<RawDefault>) -> Result<DefaultRule, PolicyError> {
        let (line, column) = position(self.text, raw.span().start);
        let span = raw.span();
        let (action, log) = match raw.into_inner() {
            RawDefault::Word(word) => match word.as_str() {
                "allow" => (Action::Allow, false),
                "deny" => (deny(DEFAULT_DENY_ERRNO), false),
                _ => {
                    return Err(self.error(
                        span,
                        format!("unknown default {word:?}; expected \"allow\" or \"deny\""),
                    ))
                }
            },
            RawDefault::Table(table) => {
                let Some(action) = &table.action else {
                    return Err(self.error(
                        span,
                        "[default] has no `action`; expected action = \"allow\" or \"deny\""
                            .to_owned(),
                    ));
                };
                let action = self.action(action, table.errno.as_ref())?;
                (action, table.log.is_some_and(|log| *log.get_ref()))
            }
        };
        Ok(DefaultRule {
            action,
            log,
            line,
            column,
        })
    }

    fn rule(
        &self,
        index: usize,
        raw: Spanned<RawRule>,
        origin: &Arc<str>,
    ) -> Result<Rule, PolicyError> {
        let span = raw.span();
        let (line, column) = position(self.text, span.start);
        let raw = raw.into_inner();

        let Some(op) = raw.op else {
            return Err(self.error(
                span,
                format!(
                    "rule {index} has no `op`; expected {}, or an array of them",
                    OpWord::EXPECTING
                ),
            ));
        };
        let ops = self
            .items(op, "op")?
            .into_iter()
            .map(|(word, span)| {
                Operation::from_name(&word.0).ok_or_else(|| {
                    let msg = format!("unknown operation {:?}; expected {}", word.0, OP_NAMES);
                    self.error(span, msg)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let protocol = match &raw.proto {
            None => ProtocolMatch::Any,
            Some(proto) => match proto.get_ref().as_str() {
                "any" => ProtocolMatch::Any,
                "tcp" => ProtocolMatch::Tcp,
                "udp" => ProtocolMatch::Udp,
                other => {
                    let msg =
                        format!("unknown protocol {other:?}; expected \"tcp\", \"udp\" or \"any\"");
                    return Err(self.error(proto.span(), msg));
                }
            },
        };

        let family = match &raw.family {
            None => FamilyMatch::Any,
            Some(family) => match family.get_ref().as_str() {
                "any" => FamilyMatch::Any,
                "inet" => FamilyMatch::Inet,
                "inet6" => FamilyMatch::Inet6,
                other => {
                    let msg = format!(
                        "unknown family {other:?}; expected \"inet\", \"inet6\" or \"any\""
                    );
                    return Err(self.error(family.span(), msg));
                }
            },
        };

        let addrs = match raw.addr {
            None => Vec::new(),
            Some(addr) => self.addrs(addr, family)?,
        };

        let ports = match raw.port {
            None => Vec::new(),
            Some(port) => self
                .items(port, "port")?
                .into_iter()
                .map(|(item, span)| port_range(&item).map_err(|msg| self.error(span, msg)))
                .collect::<Result<Vec<_>, _>>()?,
        };

        let Some(action) = &raw.action else {
            return Err(self.error(
                span,
                format!("rule {index} has no `action`; expected \"allow\" or \"deny\""),
            ));
        };
        let action = self.action(action, raw.errno.as_ref())?;

        Ok(Rule {
            index,
            line,
            column,
            comment: raw.comment.map(Spanned::into_inner),
            action,
            log: raw.log.is_some_and(|log| *log.get_ref()),
            origin: Arc::clone(origin),
            ops,
            protocol,
            family,
            addrs,
            ports,
        })
    }

    /// The items of a value given once or as an array, each with its span; an empty array
    /// is an error, as a rule with it could never match.
    fn items<T: Item>(
        &self,
        value: Spanned<OneOrMany<T>>,
        key: &str,
    ) -> Result<Vec<(T, Range<usize>)>, PolicyError> {
        let span = value.span();
        match value.into_inner() {
            OneOrMany::One(item) => Ok(vec![(item, span)]),
            OneOrMany::Many(items) if items.is_empty() => Err(self.error(
                span,
                format!(
                    "`{key}` is an empty array; expected {}, or an array of them",
                    T::EXPECTING
                ),
            )),
            OneOrMany::Many(items) => Ok(items
                .into_iter()
                .map(|item| {
                    let span = item.span();
                    (item.into_inner(), span)
                })
                .collect()),
        }
    }

    /// A rule's addresses; empty when they include `any`.
    fn addrs(
        &self,
        value: Spanned<OneOrMany<AddrWord>>,
        family: FamilyMatch,
    ) -> Result<Vec<AddrItem>, PolicyError> {
        let mut addrs = Vec::new();
        for (AddrWord(text), span) in self.items(value, "addr")? {
            let item = match NamedSet::from_name(&text) {
                Some(set) => AddrItem::Set(set),
                None => {
                    AddrItem::Prefix(Cidr::parse(&text).map_err(|m| self.error(span.clone(), m))?)
                }
            };
            if let AddrItem::Prefix(cidr) = item {
                let clash = match family {
                    FamilyMatch::Any => None,
                    FamilyMatch::Inet => (!cidr.is_ipv4()).then_some(("IPv6", "inet")),
                    FamilyMatch::Inet6 => cidr.is_ipv4().then_some(("IPv4", "inet6")),
                };
                if let Some((kind, family)) = clash {
                    let msg = format!(
                        "{text:?} is an {kind} address (IPv4-mapped addresses count as IPv4) \
                         but the rule has family = \"{family}\", so it could never match; \
                         expected an address of that family"
                    );
                    return Err(self.error(span, msg));
                }
            }
            addrs.push(item);
        }
        if addrs.contains(&AddrItem::Set(NamedSet::Any)) {
            addrs.clear();
        }
        Ok(addrs)
    }

    fn action(
        &self,
        action: &Spanned<String>,
        errno: Option<&Spanned<String>>,
    ) -> Result<Action, PolicyError> {
        match (action.get_ref().as_str(), errno) {
            ("allow", None) => Ok(Action::Allow),
            ("allow", Some(errno)) => Err(self.error(
                errno.span(),
                "`errno` is only for action = \"deny\"; expected no `errno` with \"allow\""
                    .to_owned(),
            )),
            ("deny", None) => Ok(deny(DEFAULT_DENY_ERRNO)),
            ("deny", Some(errno)) => match deny_errno_by_name(errno.get_ref()) {
                Some(value) => Ok(deny(value)),
                None => {
                    let names: Vec<&str> = DENY_ERRNOS.iter().map(|(name, _)| *name).collect();
                    let msg = format!(
                        "errno {:?} is not one a policy can deny with; expected one of {}",
                        errno.get_ref(),
                        names.join(", ")
                    );
                    Err(self.error(errno.span(), msg))
                }
            },
            (other, _) => Err(self.error(
                action.span(),
                format!("unknown action {other:?}; expected \"allow\" or \"deny\""),
            )),
        }
    }
}

const OP_NAMES: &str = "\"connect\", \"bind\", \"listen\", \"accept\" or \"send\"";

fn deny(errno: i32) -> Action {
    Action::Deny { errno }
}

fn port_range(item: &PortItem) -> Result<PortRange, String> {
    const EXPECTED: &str = "expected a port from 0 to 65535, or a range such as \"1024-65535\"";
    match item {
        PortItem::Number(n) => match u16::try_from(*n) {
            Ok(port) => Ok(PortRange {
                first: port,
                last: port,
            }),
            Err(_) => Err(format!("port {n} is out of range; {EXPECTED}")),
        },
        PortItem::Text(text) => {
            let number = |s: &str| {
                let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                digits.then(|| s.parse::<u16>().ok()).flatten()
            };
            let (first, last) = text.split_once('-').unwrap_or((text, text));
            match (number(first), number(last)) {
                (Some(first), Some(last)) if first <= last => Ok(PortRange { first, last }),
                (Some(_), Some(_)) => Err(format!(
                    "port range {text:?} ends before it starts; expected first-last with \
                     first ≤ last"
                )),
                _ => Err(format!("{text:?} is not a port or port range; {EXPECTED}")),
            }
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
