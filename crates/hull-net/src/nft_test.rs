//! For the tests of the nftables scripts: the rules of one chain.

/// The lines of chain `name` in `script`, trimmed, without its braces.
pub(crate) fn chain<'a>(script: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("  chain {name} {{");
    script
        .lines()
        .skip_while(|line| *line != start)
        .skip(1)
        .take_while(|line| *line != "  }")
        .map(str::trim)
        .collect()
}
