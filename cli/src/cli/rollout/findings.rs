//! A plan's lint findings for people: counts, then one line per rule (severity, how many,
//! where first, what), so a history with hundreds of findings stays readable; `--verbose`
//! lists every finding instead (`--output json` and `fleetshift lint` always have them all).

use std::collections::BTreeMap;

use fleetshift_common::proto::v1::LintFinding;

/// How much of the findings to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// One line per rule.
    ByRule,
    /// Every finding.
    Every,
}

/// The lines to print for `findings`.
pub fn lines(findings: &[LintFinding], detail: Detail) -> Vec<String> {
    if findings.is_empty() {
        return vec!["lint: no findings".to_owned()];
    }
    let open = |severity: &str| {
        findings
            .iter()
            .filter(|finding| finding.allowed.is_empty() && finding.severity == severity)
            .count()
    };
    let allowed = findings
        .iter()
        .filter(|finding| !finding.allowed.is_empty())
        .count();
    let mut lines = vec![format!(
        "lint: {} error(s), {} warning(s), {} info, {} allowed{}",
        open("error"),
        open("warning"),
        open("info"),
        allowed,
        match detail {
            Detail::ByRule => " (by rule; --verbose lists each finding)",
            Detail::Every => "",
        }
    )];
    match detail {
        Detail::ByRule => lines.extend(by_rule(findings)),
        Detail::Every => lines.extend(findings.iter().map(every)),
    }
    lines
}

/// `  file:line: severity [rule] message`, or `allowed [rule]: reason`.
fn every(finding: &LintFinding) -> String {
    if finding.allowed.is_empty() {
        format!(
            "  {}:{}: {} [{}] {}",
            finding.file, finding.line, finding.severity, finding.rule, finding.message
        )
    } else {
        format!(
            "  {}:{}: allowed [{}]: {}",
            finding.file, finding.line, finding.rule, finding.allowed
        )
    }
}

/// One line per (standing, rule): errors first, then warnings, info and allowed findings,
/// the most frequent rule first within each.
fn by_rule(findings: &[LintFinding]) -> Vec<String> {
    let mut groups: BTreeMap<(u8, &str), Vec<&LintFinding>> = BTreeMap::new();
    for finding in findings {
        groups
            .entry((standing(finding), finding.rule.as_str()))
            .or_default()
            .push(finding);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(
        |((left_standing, left_rule), left), ((right_standing, right_rule), right)| {
            left_standing
                .cmp(right_standing)
                .then(right.len().cmp(&left.len()))
                .then(left_rule.cmp(right_rule))
        },
    );
    groups
        .into_iter()
        .map(|((_, rule), members)| {
            let first = members[0];
            let what = if first.allowed.is_empty() {
                first.message.lines().next().unwrap_or_default()
            } else {
                first.allowed.as_str()
            };
            format!(
                "  {:<8} {rule} ×{}, first at {}:{}: {what}",
                label(first),
                members.len(),
                first.file,
                first.line
            )
        })
        .collect()
}

/// Errors, warnings, info, then allowed findings.
fn standing(finding: &LintFinding) -> u8 {
    match (finding.allowed.is_empty(), finding.severity.as_str()) {
        (true, "error") => 0,
        (true, "warning") => 1,
        (true, _) => 2,
        (false, _) => 3,
    }
}

fn label(finding: &LintFinding) -> &str {
    if finding.allowed.is_empty() {
        &finding.severity
    } else {
        "allowed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, severity: &str, file: &str, allowed: &str) -> LintFinding {
        LintFinding {
            rule: rule.to_owned(),
            severity: severity.to_owned(),
            file: file.to_owned(),
            line: 1,
            message: format!("{rule} message\nmore"),
            allowed: allowed.to_owned(),
            ..LintFinding::default()
        }
    }

    #[test]
    fn findings_are_summarised_by_rule_and_listed_in_full_when_asked() {
        let mut findings = vec![finding("prefer-robust-stmts", "warning", "1_a.sql", "")];
        findings.extend((2..=40).map(|n| {
            finding(
                "require-concurrent-index-creation",
                "warning",
                &format!("{n}_b.sql"),
                "",
            )
        }));
        findings.push(finding("ban-drop-column", "error", "41_c.sql", ""));
        findings.push(finding(
            "ban-drop-table",
            "error",
            "42_d.sql",
            "reviewed: empty table",
        ));
        let summary = lines(&findings, Detail::ByRule);
        assert_eq!(
            summary,
            [
                "lint: 1 error(s), 40 warning(s), 0 info, 1 allowed (by rule; --verbose lists each finding)",
                "  error    ban-drop-column ×1, first at 41_c.sql:1: ban-drop-column message",
                "  warning  require-concurrent-index-creation ×39, first at 2_b.sql:1: require-concurrent-index-creation message",
                "  warning  prefer-robust-stmts ×1, first at 1_a.sql:1: prefer-robust-stmts message",
                "  allowed  ban-drop-table ×1, first at 42_d.sql:1: reviewed: empty table",
            ]
        );
        let every = lines(&findings, Detail::Every);
        assert_eq!(every.len(), 1 + findings.len());
        assert_eq!(
            every[42],
            "  42_d.sql:1: allowed [ban-drop-table]: reviewed: empty table"
        );
        assert_eq!(lines(&[], Detail::ByRule), ["lint: no findings"]);
    }
}
