use super::*;

fn users(order: &[usize]) -> Snapshot {
    let objects = [
        (
            ObjectKind::Table,
            "public.users",
            attributes([("kind", "table".to_owned())]),
        ),
        (
            ObjectKind::Column,
            "public.users.email",
            attributes([("type", "text".to_owned()), ("not_null", "true".to_owned())]),
        ),
        (
            ObjectKind::Function,
            "public.touch()",
            attributes([(
                "definition",
                "CREATE FUNCTION public.touch()\n AS $$ SELECT '\\n' $$".to_owned(),
            )]),
        ),
    ];
    let mut snapshot = Snapshot::default();
    for index in order {
        let (kind, name, attributes) = objects[*index].clone();
        snapshot.insert(kind, name, attributes);
    }
    snapshot
}

#[test]
fn the_canonical_text_does_not_depend_on_the_order_objects_were_read() {
    assert_eq!(users(&[0, 1, 2]).canonical(), users(&[2, 0, 1]).canonical());
    assert_eq!(
        users(&[0, 1, 2]).fingerprint(),
        users(&[1, 2, 0]).fingerprint()
    );
}

#[test]
fn the_canonical_text_reads_back_with_line_breaks_and_backslashes() {
    let snapshot = users(&[0, 1, 2]);
    let text = snapshot.canonical();
    assert!(
        text.starts_with("table public.users\n  kind: table\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 7, "{text}");
    assert_eq!(Snapshot::parse(&text), Ok(snapshot));
}

#[test]
fn text_that_is_not_a_snapshot_is_refused_by_line() {
    let error = Snapshot::parse("table public.users\n  kind table\n").expect_err("refused");
    assert_eq!(error.line, 2);
    let error = Snapshot::parse("gadget public.users\n").expect_err("refused");
    assert!(
        error.problem.contains("unknown object kind `gadget`"),
        "{error}"
    );
}

#[test]
fn a_diff_names_each_object_and_attribute() {
    let reference = users(&[0, 1, 2]);
    let mut drifted = users(&[0, 1]);
    drifted.insert(
        ObjectKind::Column,
        "public.users.email",
        attributes([("type", "character varying(200)".to_owned())]),
    );
    drifted.insert(
        ObjectKind::Index,
        "public.users_email_idx",
        Attributes::new(),
    );
    let lines: Vec<String> = drifted
        .diff(&reference)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "column public.users.email: not_null (none) vs true",
            "column public.users.email: type character varying(200) vs text",
            "index public.users_email_idx: extra",
            "function public.touch(): missing",
        ]
    );
    assert!(reference.diff(&reference).is_empty());
}

#[test]
fn fingerprints_read_back_only_from_sha256_hex() {
    let fingerprint = users(&[0]).fingerprint();
    assert_eq!(
        Fingerprint::from_hex(fingerprint.as_str()),
        Some(fingerprint.clone())
    );
    assert_eq!(fingerprint.short().len(), 12);
    assert_eq!(Fingerprint::from_hex("abc"), None);
}
