//! Shell completions: clap_complete's scripts, with one addition for the command line that
//! `rumphijack run` wraps.
//!
//! In `rumphijack run [OPTIONS] PROGRAM [ARGS]...` everything from PROGRAM on belongs to
//! another program, as in `sudo` or `timeout`: PROGRAM completes as a command name and its
//! arguments with that program's own completion. clap_complete gives that hint to zsh only,
//! so the bash and fish scripts get a function that finds where the program starts — the
//! first word after `run` that is neither an option nor an option's value, or the word after
//! `--` — and hands the rest of the line to the shell's own command-line completion. The
//! options that take a value come from the same clap definition as the parser's.

use std::io;

use clap_complete::Shell;

/// The subcommand whose trailing words are a command line of their own.
const WRAPPER: &str = "run";

/// The completion script of `name` for `shell`.
pub fn script(shell: Shell, command: &mut clap::Command, name: &str) -> io::Result<String> {
    let mut bytes = Vec::new();
    clap_complete::generate(shell, command, name, &mut bytes);
    let script = String::from_utf8(bytes).map_err(|e| invalid(name, &e.to_string()))?;

    let Some(run) = command.find_subcommand(WRAPPER) else {
        return Ok(script);
    };
    let options = value_options(run);
    match shell {
        Shell::Bash => bash_with_program(&script, name, &options),
        Shell::Fish => fish_with_program(&script, name, &options),
        _ => Ok(script),
    }
}

/// The option words of `run` after which the next word is the option's value.
fn value_options(run: &clap::Command) -> Vec<String> {
    let mut words = Vec::new();
    for arg in run.get_arguments() {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        words.extend(
            arg.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        words.extend(
            arg.get_short_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|s| format!("-{s}")),
        );
    }
    words
}

/// bash: `_NAME_with_program` runs bash-completion's `_command_offset` from the program's
/// word on, and clap's `_NAME` before it; it replaces `_NAME` in the `complete` lines.
fn bash_with_program(script: &str, name: &str, options: &[String]) -> io::Result<String> {
    let clap_function = format!("_{name}");
    let function = format!("_{name}_with_program");
    let finder = format!("_{name}_program_word");
    let registration = format!("complete -F {clap_function} ");
    if !script.contains(&registration) {
        return Err(invalid(
            name,
            &format!("no `{registration}` in clap's bash script"),
        ));
    }
    let script = script.replace(&registration, &format!("complete -F {function} "));
    let cases: Vec<String> = options.iter().map(|o| format!("{WRAPPER},{o}")).collect();
    let cases = cases.join("|");

    Ok(format!(
        r#"{script}
# `{name} {WRAPPER} [OPTIONS] PROGRAM [ARGS]...`: from PROGRAM on, the line is completed as a
# command line of its own (bash-completion's _command_offset, as for sudo).

# Prints the index in COMP_WORDS where the program starts, if the cursor has reached it.
{finder}() {{
    local line=$COMP_LINE piece rest i j state=top
    local -a starts=() words=()

    # COMP_WORDS is split at '=' and ':' as well; join the pieces that no blank separates,
    # so that `--server unix:///s` is one option and one value.
    for ((i = 0; i <= COMP_CWORD; i++)); do
        piece=${{COMP_WORDS[i]}}
        rest=${{line#"${{line%%[![:space:]]*}}"}}
        if ((i == 0)) || [[ ${{#rest}} -ne ${{#line}} ]]; then
            starts+=("$i")
            words+=("$piece")
        else
            words[-1]+=$piece
        fi
        line=${{rest#"$piece"}}
    done

    for ((j = 1; j < ${{#words[@]}}; j++)); do
        case $state,${{words[j]}} in
            top,{WRAPPER}) state=run ;;
            top,-*) ;;
            top,*) return 1 ;;
            run,--)
                ((j + 1 < ${{#words[@]}})) || return 1
                echo "${{starts[j + 1]}}"
                return 0
                ;;
            {cases}) ((j++)) ;;
            run,-*) ;;
            run,*)
                echo "${{starts[j]}}"
                return 0
                ;;
        esac
    done
    return 1
}}

{function}() {{
    local start
    if declare -F _command_offset >/dev/null && start=$({finder}); then
        _command_offset "$start"
    else
        {clap_function} "$@"
    fi
}}
"#
    ))
}

/// fish: while the cursor is in the program's command line, that line is completed as fish
/// completes any command (`complete -C`), and none of `run`'s own options are offered.
fn fish_with_program(script: &str, name: &str, options: &[String]) -> io::Result<String> {
    let condition = format!("-n \"__fish_{name}_using_subcommand {WRAPPER}\"");
    let finder = format!("__fish_{name}_program_line");
    if !script.contains(&condition) {
        return Err(invalid(
            name,
            &format!("no `{condition}` in clap's fish script"),
        ));
    }
    let script = script.replace(
        &condition,
        &format!("-n \"__fish_{name}_using_subcommand {WRAPPER}; and not {finder} >/dev/null\""),
    );
    let cases = options.join(" ");

    Ok(format!(
        r#"{script}
# `{name} {WRAPPER} [OPTIONS] PROGRAM [ARGS]...`: from PROGRAM on, the line is completed as a
# command line of its own.

# Prints the tokens of the program's command line, if the cursor has reached it.
function {finder}
    set -l tokens (commandline -opc) (commandline -ct)
    set -l state top
    set -l i 2
    while test $i -le (count $tokens)
        set -l token $tokens[$i]
        switch $state
            case top
                switch "$token"
                    case {WRAPPER}
                        set state run
                    case '-*'
                    case '*'
                        return 1
                end
            case run
                switch "$token"
                    case '--'
                        set i (math $i + 1)
                        test $i -le (count $tokens); or return 1
                        printf '%s\n' $tokens[$i..-1]
                        return 0
                    case {cases}
                        set i (math $i + 1)
                    case '-*'
                    case '*'
                        printf '%s\n' $tokens[$i..-1]
                        return 0
                end
        end
        set i (math $i + 1)
    end
    return 1
end

complete -c {name} -n "{finder} >/dev/null" -f -a "(complete -C (string join ' ' -- ({finder})))"
"#
    ))
}

fn invalid(name: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("completion of {name}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_of_run_that_take_a_value_are_known() {
        let command = rumphijack_cli::command();
        let run = command.find_subcommand(WRAPPER).expect("rumphijack run");
        let options = value_options(run);
        for option in [
            "--server",
            "--secret-file",
            "--netns",
            "--policy",
            "--library",
        ] {
            assert!(options.iter().any(|o| o == option), "{option}: {options:?}");
        }
        for flag in ["--isolated", "--preload", "--close-fds", "-v", "--verbose"] {
            assert!(!options.iter().any(|o| o == flag), "{flag}: {options:?}");
        }
    }

    #[test]
    fn bash_and_fish_scripts_find_the_program_of_run() {
        for shell in [Shell::Bash, Shell::Fish] {
            let script = script(shell, &mut rumphijack_cli::command(), "rumphijack").unwrap();
            assert!(script.contains("rumphijack_program_"), "{shell}");
            assert!(script.contains("--secret-file"), "{shell}");
        }
    }
}
