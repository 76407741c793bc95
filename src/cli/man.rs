//! roundhouse(1), rendered from the clap definitions with clap_mangen: the options and every
//! subcommand come from the same place as `--help`; EXIT STATUS and FILES from the tables in
//! [`super`].

use std::io::{self, Write};

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::{Cli, EXAMPLES, EXIT_STATUS, FILES};

/// The roff source of roundhouse(1).
pub fn roundhouse_1() -> String {
    let mut cmd = Cli::command();
    // fills in what rendering reads: each subcommand's bin name ("roundhouse drain"), --help
    cmd.build();
    let mut out = Vec::new();
    render(&cmd, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("clap and roff write UTF-8")
}

fn render(cmd: &clap::Command, out: &mut Vec<u8>) -> io::Result<()> {
    let man = Man::new(cmd.clone()).manual("roundhouse manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    description(out)?;
    man.render_options_section(out)?;

    out.write_all(b".SH COMMANDS\n")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand(sub, out)?;
    }

    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, _, meaning) in EXIT_STATUS {
        roff.control("TP", []).text([bold(code.to_string())]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        roff.control("TP", []).text([italic(path)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", []).text([bold("RUST_LOG")]);
    roff.text([roman(
        "which log lines to write, e.g. warn or roundhouse=debug (default: info).",
    )]);
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", []);
    for line in EXAMPLES.lines() {
        roff.text([roman(line.trim_start())]);
    }
    roff.control("fi", []);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("roundhouse.yaml"),
        roman("(5), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1)"),
    ]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// The paragraphs that say what `--help` has no room for.
fn description(out: &mut Vec<u8>) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("PP", []).text([roman(
        "roundhouse hands each client connection to the next healthy node of a backend. It \
         checks each node as an Elasticsearch node (cluster colour, cluster name, how many \
         nodes it sees), and refuses to start until its configuration says enabled: true, \
         saying so on stderr, in its exit code (78) and in the systemd status line.",
    )]);
    roff.control("PP", []).text([roman(
        "status, drain, maint and ready talk to the admin endpoint of a running roundhouse; \
         they find it in the configuration file (admin.bind, admin.token_file) unless --admin \
         and --token-file say otherwise.",
    )]);
    roff.to_writer(out)
}

/// One subcommand as a subsection: its synopsis, what it does, its options.
fn subcommand(sub: &clap::Command, out: &mut Vec<u8>) -> io::Result<()> {
    let man = Man::new(sub.clone());
    // subcommand names are plain words: nothing to escape
    writeln!(out, ".SS {}", sub.get_name())?;
    section_body(out, |w| man.render_synopsis_section(w))?;
    out.write_all(b".PP\n")?;
    section_body(out, |w| man.render_description_section(w))?;
    section_body(out, |w| man.render_options_section(w))
}

/// A section clap_mangen renders, without its `.SH` heading, to sit under a `.SS` one.
fn section_body(
    out: &mut Vec<u8>,
    render: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut section = Vec::new();
    render(&mut section)?;
    let section = String::from_utf8_lossy(&section);
    let body = section
        .lines()
        .skip_while(|l| !l.starts_with(".SH "))
        .skip(1);
    for line in body {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
