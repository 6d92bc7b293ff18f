//! A man page from a [`clap::Command`], with the sections a man page reader expects.
//!
//! `clap_mangen` renders one page per subcommand and puts the text after the options under
//! a heading of its own (`EXTRA`); a reader of `rumphijack(1)` expects one page with the
//! usual sections instead. So the page is assembled here with `roff`, the crate
//! `clap_mangen` renders with, from these parts of the command:
//!
//! * NAME: the name and `about`;
//! * SYNOPSIS: clap's own usage line of each command that does something, as `--help`
//!   prints it;
//! * DESCRIPTION: `long_about`;
//! * COMMANDS: for each subcommand, its `long_about` and its options;
//! * OPTIONS: the options and operands of the command itself;
//! * then `after_long_help`, whose sections (`Environment:`, `Exit status:`, …) become the
//!   page's ENVIRONMENT, EXIT STATUS and so on.
//!
//! Help texts are plain text with a few conventions ([`Text`]): a line ending in `:` with
//! no indentation starts a section, `  TERM  text` is a list item and a deeper indented
//! line continues it, `  $ command` is an example; a blank line separates paragraphs.

use clap::{Arg, ArgAction, Command};
use roff::{bold, italic, roman, Inline, Roff};

/// The page of `cmd` for manual section `section` (e.g. `"1"`), dated `date`, in roff.
pub fn render(cmd: &Command, section: &str, date: &str, manual: &str) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let name = cmd.get_name().to_owned();
    // The package version only: the footer has no room for the protocol versions.
    let version = cmd.get_version().unwrap_or_default();
    let source = format!("{name} {}", version.split(" (").next().unwrap_or(version));

    let mut page = Roff::new();
    page.control(
        "TH",
        [name.to_uppercase().as_str(), section, date, &source, manual],
    );

    page.control("SH", ["NAME"]);
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    page.text([roman(format!("{name} - {about}"))]);

    page.control("SH", ["SYNOPSIS"]);
    for (i, leaf) in leaves(&cmd).iter().enumerate() {
        if i > 0 {
            page.control("br", []);
        }
        synopsis(&mut page, leaf);
    }

    page.control("SH", ["DESCRIPTION"]);
    Text::new(&mut page, false).render(&long_about(&cmd));

    if cmd.has_subcommands() {
        page.control("SH", ["COMMANDS"]);
        for leaf in leaves(&cmd) {
            let title = leaf.get_bin_name().unwrap_or(leaf.get_name()).to_owned();
            page.control("SS", [title.as_str()]);
            Text::new(&mut page, false).render(&long_about(leaf));
            options(&mut page, leaf, false);
        }
    }

    page.control("SH", ["OPTIONS"]);
    options(&mut page, &cmd, true);

    if let Some(after) = cmd.get_after_long_help() {
        Text::new(&mut page, true).render(&after.to_string());
    }
    page.render()
}

/// The commands that do something: `cmd` itself when it has no subcommands, else every
/// subcommand without subcommands of its own, depth first.
fn leaves(cmd: &Command) -> Vec<&Command> {
    if !cmd.has_subcommands() {
        return vec![cmd];
    }
    // clap's own `help` subcommand only repeats what the page says.
    cmd.get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .flat_map(leaves)
        .collect()
}

fn long_about(cmd: &Command) -> String {
    cmd.get_long_about()
        .or(cmd.get_about())
        .map(|text| text.to_string())
        .unwrap_or_default()
}

/// clap's usage line, the one `--help` prints, with the command name in bold.
fn synopsis(page: &mut Roff, cmd: &Command) {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let bin = cmd.get_bin_name().unwrap_or(cmd.get_name());
    match usage.strip_prefix(bin) {
        Some(rest) => page.text([bold(bin), roman(rest)]),
        None => page.text([roman(usage)]),
    };
}

/// A `.TP` item for each visible argument of `cmd`. `-h`/`-V` are left out of commands
/// other than the page's own (`with_builtins`), where they would only repeat themselves.
fn options(page: &mut Roff, cmd: &Command, with_builtins: bool) {
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let builtin = matches!(arg.get_action(), ArgAction::Help | ArgAction::Version);
        if builtin && !with_builtins {
            continue;
        }
        page.control("TP", []);
        page.text(arg_header(arg));
        let help = arg.get_long_help().or(arg.get_help());
        let mut body = help.map(|h| h.to_string()).unwrap_or_default();
        // clap drops the final period of a one-paragraph doc comment.
        if !body.is_empty() && !body.ends_with('.') {
            body.push('.');
        }
        if let Some(env) = arg.get_env() {
            body.push_str(&format!(
                " May also be set with `{}`.",
                env.to_string_lossy()
            ));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if arg.get_action().takes_values() && !defaults.is_empty() {
            body.push_str(&format!(" Default: {}.", defaults.join(", ")));
        }
        for line in body.lines() {
            page.text(code_spans(line.trim()));
        }
    }
}

/// `text` with each `` `span` `` set in bold, the way the help marks commands and names.
fn code_spans(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// `-v, --verbose`, `--server URL`, or an operand such as `PROGRAM`.
fn arg_header(arg: &Arg) -> Vec<Inline> {
    let values: Vec<String> = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_else(|| vec![arg.get_id().to_string().to_uppercase()]);
    if arg.is_positional() {
        let mut header = vec![italic(values.join(" "))];
        if arg.get_num_args().is_some_and(|n| n.max_values() > 1) {
            header.push(roman("..."));
        }
        return header;
    }

    let mut header = Vec::new();
    if let Some(short) = arg.get_short() {
        header.push(bold(format!("-{short}")));
    }
    if let Some(long) = arg.get_long() {
        if !header.is_empty() {
            header.push(roman(", "));
        }
        header.push(bold(format!("--{long}")));
    }
    if arg.get_action().takes_values() {
        for value in values {
            header.push(roman(" "));
            header.push(italic(value));
        }
    }
    header
}

/// Renders help text written with the conventions of the module docs.
struct Text<'a> {
    page: &'a mut Roff,
    /// Whether `Heading:` lines start sections (after-help) or stay text (descriptions).
    sections: bool,
    state: State,
}

/// What the previous line left open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing yet, or a paragraph break was just written.
    Start,
    Paragraph,
    Item,
    Example,
}

impl<'a> Text<'a> {
    fn new(page: &'a mut Roff, sections: bool) -> Text<'a> {
        Text {
            page,
            sections,
            state: State::Start,
        }
    }

    fn render(mut self, text: &str) {
        for line in text.lines() {
            self.line(line);
        }
        self.end_example();
    }

    fn line(&mut self, line: &str) {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim();

        if content.is_empty() {
            self.end_example();
            if self.state != State::Start {
                self.page.control("PP", []);
                self.state = State::Start;
            }
        } else if indent == 0 && is_heading(content) {
            self.end_example();
            if self.sections {
                let heading = content.trim_end_matches(':').to_uppercase();
                self.page.control("SH", [heading.as_str()]);
            } else {
                self.page.text([bold(content)]);
                self.page.control("br", []);
            }
            self.state = State::Start;
        } else if indent == 2 && content.starts_with("$ ") {
            if self.state != State::Example {
                self.page.control("RS", ["4"]);
                self.page.control("nf", []);
                self.state = State::Example;
            }
            self.page.text([roman(content)]);
        } else if let (2, Some((term, description))) = (indent, split_item(content)) {
            self.end_example();
            self.page.control("TP", []);
            self.page.text([bold(term)]);
            self.page.text(code_spans(description));
            self.state = State::Item;
        } else if indent > 2 && self.state == State::Item {
            self.page.text(code_spans(content));
        } else {
            self.end_example();
            if self.state == State::Item {
                self.page.control("PP", []);
            }
            self.page.text(code_spans(content));
            self.state = State::Paragraph;
        }
    }

    fn end_example(&mut self) {
        if self.state == State::Example {
            self.page.control("fi", []);
            self.page.control("RE", []);
            self.state = State::Start;
        }
    }
}

/// `Exit status:`, `See also:`: a few words ending in a colon.
fn is_heading(content: &str) -> bool {
    content.ends_with(':') && content.split_whitespace().count() <= 3
}

/// `TERM  description` (two or more spaces between them).
fn split_item(content: &str) -> Option<(&str, &str)> {
    let gap = content.find("  ")?;
    let (term, rest) = content.split_at(gap);
    Some((term, rest.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &str, sections: bool) -> String {
        let mut page = Roff::new();
        Text::new(&mut page, sections).render(input);
        page.to_roff()
    }

    #[test]
    fn headings_become_sections_and_items_tagged_paragraphs() {
        let out = text(
            "Exit status:\n  0   fine\n  1   broken, with a\n      long reason\n  See above.",
            true,
        );
        assert_eq!(
            out,
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nfine\n.TP\n\\fB1\\fR\nbroken, with a\n\
             long reason\n.PP\nSee above.\n"
        );
    }

    #[test]
    fn examples_keep_their_lines() {
        let out = text(
            "Examples:\n  $ rump_server --isolated\n  $ true\n\nDone.",
            true,
        );
        assert_eq!(
            out,
            ".SH EXAMPLES\n.RS 4\n.nf\n$ rump_server \\-\\-isolated\n$ true\n.fi\n.RE\n\
             Done.\n"
        );
    }

    #[test]
    fn a_description_keeps_its_headings_as_text() {
        let out = text("First paragraph\ngoes on.\n\nNotes:\nmore", false);
        assert_eq!(
            out,
            "First paragraph\ngoes on.\n.PP\n\\fBNotes:\\fR\n.br\nmore\n"
        );
    }

    #[test]
    fn backquoted_spans_are_bold() {
        let out = text("Use `rumphijack run` here.", false);
        assert_eq!(out, "Use \\fBrumphijack run\\fR here.\n");
    }

    #[test]
    fn a_page_has_the_usual_sections_in_order() {
        let cmd = Command::new("demo")
            .version("1.0")
            .about("Do a thing")
            .long_about("Does a thing well.")
            .arg(
                Arg::new("level")
                    .long("level")
                    .value_name("N")
                    .help("How well."),
            )
            .after_long_help("Environment:\n  DEMO  where");
        let page = render(&cmd, "1", "2026-01-02", "User Commands");
        let order = [
            ".TH DEMO 1 2026-01-02 \"demo 1.0\" \"User Commands\"",
            ".SH NAME\ndemo \\- Do a thing",
            ".SH SYNOPSIS\n\\fBdemo\\fR [OPTIONS]",
            ".SH DESCRIPTION\nDoes a thing well.",
            ".SH OPTIONS\n.TP\n\\fB\\-\\-level\\fR \\fIN\\fR\nHow well.",
            ".SH ENVIRONMENT\n.TP\n\\fBDEMO\\fR\nwhere",
        ];
        let mut at = 0;
        for part in order {
            let found = page[at..]
                .find(part)
                .unwrap_or_else(|| panic!("{part:?} in\n{page}"));
            at += found + part.len();
        }
    }
}
