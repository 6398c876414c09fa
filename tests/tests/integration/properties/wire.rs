//! The wire forms peers send: a schema snapshot's canonical text and its packed form round
//! trip, and any bytes unpack to an error, never a panic; a shipped migration set with any
//! paths writes nothing outside the directory it is unpacked into; any bytes decode as an
//! agent's or operator's message or fail cleanly.

use fleetshift_common::proto::v1::{self, AgentMessage, CreatePlanRequest, MigrationFile};
use fleetshift_common::schema::{Attributes, ObjectKind, Snapshot, wire};
use fleetshift_common::shipped;
use proptest::prelude::*;
use prost::Message;

fn kind() -> impl Strategy<Value = ObjectKind> {
    prop_oneof![
        Just(ObjectKind::Table),
        Just(ObjectKind::Column),
        Just(ObjectKind::Index),
        Just(ObjectKind::Function),
        Just(ObjectKind::Trigger),
        Just(ObjectKind::Extension),
    ]
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    prop::collection::vec(
        (
            kind(),
            "\\PC{1,20}",
            prop::collection::btree_map("[a-z_]{1,8}", "\\PC{0,30}", 0..4),
        ),
        0..12,
    )
    .prop_map(|objects| {
        let mut snapshot = Snapshot::default();
        for (kind, name, attributes) in objects {
            snapshot.insert(kind, name, attributes.into_iter().collect::<Attributes>());
        }
        snapshot
    })
}

/// Paths as a hostile or careless peer might send them.
fn shipped_path() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_]{1,8}\\.sql",
        "[a-z0-9_]{1,6}/[a-z0-9_]{1,6}\\.sql",
        Just("../escape.sql".to_owned()),
        Just("/tmp/absolute.sql".to_owned()),
        Just("a/../../escape.sql".to_owned()),
        Just("./1_x.sql".to_owned()),
        Just(String::new()),
        "\\PC{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_snapshot_round_trips_through_its_text_and_its_packed_form(snapshot in snapshot()) {
        let text = snapshot.canonical();
        match Snapshot::parse(&text) {
            Ok(parsed) => prop_assert_eq!(&parsed, &snapshot),
            Err(error) => prop_assert!(false, "{}\n{}", error, text),
        }
        let fingerprint = snapshot.fingerprint().to_string();
        let unpacked = wire::unpack(&wire::pack(&snapshot), &fingerprint);
        prop_assert_eq!(unpacked.ok(), Some(snapshot));
    }

    #[test]
    fn any_bytes_unpack_to_an_error_or_a_snapshot(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::unpack(&bytes, "");
        let _ = Snapshot::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_bytes_decode_as_a_message_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = AgentMessage::decode(bytes.as_slice());
        let _ = CreatePlanRequest::decode(bytes.as_slice());
        let _ = v1::Hello::decode(bytes.as_slice());
    }

    #[test]
    fn a_shipped_set_writes_nothing_outside_its_directory(
        files in prop::collection::vec((shipped_path(), "\\PC{0,40}"), 0..6),
        format in prop_oneof![Just(String::new()), Just("sqlx".to_owned()), "[a-z]{0,6}"],
    ) {
        let root = tempfile::tempdir().expect("root");
        let directory = root.path().join("set");
        std::fs::create_dir(&directory).expect("set directory");
        let set = v1::MigrationSet {
            format,
            digest: String::new(),
            files: files
                .into_iter()
                .map(|(path, content)| MigrationFile { path, content: content.into_bytes() })
                .collect(),
            origin: String::new(),
        };
        let absolute = std::path::Path::new("/tmp/absolute.sql");
        let absolute_before = absolute.exists();
        let _ = shipped::unpack(&set, &directory);
        let outside: Vec<_> = std::fs::read_dir(root.path())
            .expect("root listing")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .filter(|name| name != "set")
            .collect();
        prop_assert!(outside.is_empty(), "written outside the set's directory: {:?}", outside);
        prop_assert!(absolute_before || !absolute.exists(), "an absolute path was written");
    }
}
